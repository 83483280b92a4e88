from __future__ import annotations

import datetime as dt

import pytest

from iplosctl.errors import ProfileError
from iplosctl.profiles import available_years, load_profile


def test_shipped_years() -> None:
    assert available_years() == [2021, 2023, 2024, 2025, 2026]


def test_2021_from_the_kpr_letter() -> None:
    p = load_profile(2021)
    assert p.environments["production"].receiver_her_id == 134197
    assert p.edi_address == "kpr@edi.nhn.no"
    assert [(d.name, d.date) for d in p.deadlines] == [
        ("ordinary", dt.date(2022, 1, 15)),
        ("corrections", dt.date(2022, 2, 10)),
        ("final", dt.date(2022, 3, 26)),
    ]
    assert len(p.message_parts) == 1


def test_2023_environments_and_parts() -> None:
    p = load_profile(2023)
    assert {n: e.receiver_her_id for n, e in p.environments.items() if not e.sandbox} == {
        "production": 122612,
        "qa": 171479,
        "test": 8133973,
    }
    assert [part.type for part in p.message_parts] == ["KPR_IPL", "KPR_IDE"]
    assert p.deadlines[0].date == dt.date(2024, 1, 15)
    assert p.environments["sandbox"].sandbox
    assert p.environments["production"].production and not p.environments["test"].production


@pytest.mark.parametrize("year", [2021, 2023, 2024, 2025, 2026])
def test_code_lists(year: int) -> None:
    p = load_profile(year)
    assert len(p.service_codes) == 25
    assert {"12", "13"} == p.housing_obsolete and not ({"12", "13"} & set(p.service_codes))
    assert p.housing_current == {"29"}
    assert p.welfare_technology_codes == {"6", "26", "27", "28"}
    assert p.service_codes["21"].org_number == "required"
    assert p.service_codes["29"].org_number == "forbidden"
    assert p.service_codes["26"].org_number == "forbidden"
    assert p.service_codes["6"].org_number == "optional"


def test_missing_year_names_the_available_ones() -> None:
    with pytest.raises(ProfileError, match=r"no reporting-year profile for 2019 .*2021, 2023"):
        load_profile(2019)
