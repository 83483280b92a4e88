from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from iplosctl.errors import ProfileError, UsageError
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.identifiers import (
    PersonIdKind,
    has_valid_person_control_digits,
    is_synthetic_person_id,
    person_id_kind,
)
from iplosctl.profiles import load_profile
from iplosctl.sandbox.generate import (
    DEMO_SERVICE_UNITS,
    generate_export,
    synthetic_header,
    synthetic_recipients,
)

REPO = Path(__file__).resolve().parent.parent


def generated(**kwargs: object) -> bytes:
    out = io.BytesIO()
    arguments: dict[str, object] = {"recipients": 200, "seed": 1} | kwargs
    generate_export(out, **arguments)  # type: ignore[arg-type]
    return out.getvalue()


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert generated(seed=42) == generated(seed=42)
    assert generated(seed=42) != generated(seed=43)


def test_output_validates_against_the_xsd() -> None:
    schema = etree.XMLSchema(etree.parse(str(EXPORT_V1_XSD)))
    schema.assertValid(etree.fromstring(generated(recipients=500, test_persons=2)))


def test_person_ids_are_unique_valid_test_norge_numbers() -> None:
    records = list(synthetic_recipients(recipients=3000, seed=5))
    ids = [r.person_id for r in records]
    assert len(set(ids)) == len(ids)
    assert all(has_valid_person_control_digits(i) and is_synthetic_person_id(i) for i in ids)
    kinds = Counter(person_id_kind(i) for i in ids)
    assert set(kinds) == {PersonIdKind.TNR, PersonIdKind.DNR_TNR}
    assert 0 < kinds[PersonIdKind.DNR_TNR] < len(ids) * 0.1


def test_recipients_are_mostly_elderly() -> None:
    def birth_year(person_id: str) -> int:
        yy, individ = int(person_id[4:6]), int(person_id[6:9])
        return (2000 if individ >= 500 else 1900) + yy

    ages = [2023 - birth_year(r.person_id) for r in synthetic_recipients(recipients=2000, seed=2)]
    assert sum(age >= 67 for age in ages) > len(ages) * 0.6
    assert min(ages) >= 0 and max(ages) <= 101


def test_services_follow_the_profile_rules() -> None:
    codes = load_profile(2023).service_codes
    records = list(synthetic_recipients(recipients=3000, seed=9))
    seen: Counter[str] = Counter()
    for r in records:
        assert r.services, "every recipient has at least one service"
        for s in r.services:
            seen[s.code] += 1
            rule = codes[s.code].org_number
            if rule == "required":
                assert s.org_number in DEMO_SERVICE_UNITS
            elif rule == "forbidden":
                assert s.org_number is None
            if s.hours_per_week is not None:
                assert 0 < s.hours_per_week <= 168
            assert s.start is not None
            if s.end is not None:
                assert s.start <= s.end
            if s.decision_date is not None:
                assert s.decision_date <= s.start
    for code in ("15", "1", "6", "21", "29", "26", "27", "28"):
        assert seen[code] > 0, code
    assert seen["15"] > seen["6"] > seen["29"] > seen["26"]
    assert {"18", "19", "20"} & set(seen)
    in_year = sum(s.start.year == 2023 for r in records for s in r.services if s.start)
    assert in_year > sum(len(r.services) for r in records) / 2


def test_assessments_and_rehabilitation() -> None:
    records = list(synthetic_recipients(recipients=1000, seed=3))
    assessed = [r for r in records if r.assessments]
    assert len(records) * 0.4 < len(assessed) < len(records) * 0.8
    for r in assessed:
        variables = [int(a.variable) for a in r.assessments]
        assert variables == sorted(set(variables)) and 1 <= min(variables) <= max(variables) <= 17
        assert all(a.score in (1, 2, 3, 4, 5, 9) for a in r.assessments)
    assert 0 < sum(r.rehabilitation for r in records) < len(records) * 0.2


def test_test_persons_only_when_asked() -> None:
    assert b"<Name>" not in generated()
    data = generated(test_persons=3)
    assert data.count(b"<Name>Donald Duck</Name>") == 3
    assert data.count(b"<Name>") == 3


def test_header_comes_from_the_arguments_not_the_clock() -> None:
    header = synthetic_header(municipality="9998", year=2021, epj_system="X", epj_version="1")
    assert header.extracted_at == dt.datetime(2022, 1, 3, 8, 0, tzinfo=dt.UTC)
    data = generated(municipality="9998", year=2021, epj_system="FjordEPJ", epj_version="7.1.3")
    assert b"<Municipality>9998</Municipality>" in data
    assert b"<ReportingYear>2021</ReportingYear>" in data
    assert b"<System>FjordEPJ</System><Version>7.1.3</Version>" in data


def test_writes_a_path_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.xml"
    written = generate_export(target, recipients=10, seed=1)
    assert written.recipients == 10 and target.stat().st_size == written.size
    assert [p.name for p in tmp_path.iterdir()] == ["out.xml"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"recipients": -1}, UsageError),
        ({"recipients": 2, "test_persons": 3}, UsageError),
        ({"municipality": "301"}, UsageError),
        ({"service_units": ("310000028",)}, UsageError),
        ({"service_units": ()}, UsageError),
        ({"year": 1999}, ProfileError),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        generated(**kwargs)


@pytest.mark.parametrize(
    ("path", "arguments"),
    [
        (
            "examples/exports/demo-2023.xml",
            {"recipients": 40, "seed": 2023, "test_persons": 2},
        ),
        (
            "examples/fjordvik/exports/fjordvik-2023.xml",
            {
                "recipients": 30,
                "seed": 9998,
                "municipality": "9998",
                "service_units": ("310000078", "310000086"),
                "epj_system": "FjordEPJ",
                "epj_version": "7.1.3",
                "test_persons": 1,
            },
        ),
    ],
)
def test_the_example_exports_are_generator_output(path: str, arguments: dict[str, object]) -> None:
    """Regenerate with these arguments when the generator changes."""
    data = (REPO / path).read_bytes()
    assert data == generated(**arguments)
    numbers = re.findall(rb"(?<!\d)\d{11}(?!\d)", data)
    assert numbers and all(int(n[2:3]) >= 8 for n in numbers)


def test_cli_creates_the_folder(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "new" / "folder" / "export.xml"
    result = cli("sandbox", "generate", "--recipients", "3", "--seed", "1", "--out", out)
    assert result.code == 0, result.all
    assert out.read_bytes() == generated(recipients=3, seed=1)
