"""Synthetic EPJ exports for rehearsals, demos and benchmarks (`iplosctl sandbox generate`).

Every person id is a Skatteetaten Test-Norge number (birth month + 80, valid
control digits; a few are D-numbers too), so a generated file can never hold a
real person. The shape imitates a municipality's yearly extract: mostly elderly
recipients, home care and safety alarms common, a share in long-term stays,
org numbers exactly where the reporting-year profile requires them, hours per
week from the vedtak. The file is written by the payload writer, so the test
data is byte-for-byte what iplosctl itself would produce.

Output depends only on the arguments: one `random.Random(seed)`, no clock, no
set or dict iteration order, `ExtractedAt` derived from the year.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from iplosctl.atomic import atomic_file
from iplosctl.errors import UsageError
from iplosctl.identifiers import is_valid_org_number, person_control_digits
from iplosctl.payload.export_writer import Written, write_export
from iplosctl.profiles import OrgNumberRule, load_profile
from iplosctl.records import Assessment, ExportHeader, Recipient, Service

#: the demo municipality's units (manifests/demo-2023.yaml)
DEMO_SERVICE_UNITS: tuple[str, ...] = ("310000027", "310000035", "310000043")
TEST_PERSON_NAME = "Donald Duck"
ASSESSMENT_VARIABLES: tuple[str, ...] = tuple(str(n) for n in range(1, 18))

# Share of home-dwelling recipients with each service (the rest of the population is
# in long-term stays). Rough proportions of KPR's published figures, not a statistic.
_HOME_SERVICES: tuple[tuple[str, float], ...] = (
    ("15", 0.55),  # helsetjenester i hjemmet
    ("1", 0.28),  # praktisk bistand
    ("6", 0.35),  # trygghetsalarm
    ("29", 0.10),  # bolig til helse- og omsorgsformål
    ("27", 0.08),  # elektronisk medisineringsstøtte
    ("28", 0.05),  # digitalt tilsyn
    ("26", 0.03),  # lokaliseringsteknologi (GPS)
    ("5", 0.05),  # matombringing
    ("4", 0.05),  # dagaktivitetstilbud
    ("17", 0.02),  # dagopphold i institusjon
    ("9", 0.03),  # støttekontakt
    ("7", 0.02),  # avlastning utenfor institusjon
    ("8", 0.02),  # avlastning i institusjon
    ("11", 0.02),  # omsorgsstønad
    ("25", 0.02),  # kommunal øyeblikkelig hjelp
    ("3", 0.01),  # BPA
    ("2", 0.01),  # praktisk bistand, opplæring
    ("22", 0.005),  # nattopphold
)
_LONG_TERM_SHARE = 0.14
_SHORT_STAY_SHARE = 0.10
_SHORT_STAYS = ("18", "19", "20")
#: (lowest, highest) hours per week in a vedtak, for codes measured in hours
_HOURS: dict[str, tuple[float, float]] = {
    "15": (0.5, 25.0),
    "1": (0.5, 8.0),
    "2": (1.0, 5.0),
    "3": (10.0, 40.0),
    "4": (4.0, 30.0),
    "7": (2.0, 24.0),
    "9": (1.0, 6.0),
    "11": (2.0, 30.0),
    "17": (6.0, 30.0),
}
#: stays measured in days rather than open-ended: (shortest, longest)
_STAY_DAYS: dict[str, tuple[int, int]] = {
    "18": (5, 30),
    "19": (10, 42),
    "20": (3, 21),
    "25": (1, 5),
    "8": (2, 14),
}
#: typical need level (score 1–5) by the heaviest service a recipient has
_NEED: dict[str, int] = {"21": 4, "18": 3, "19": 3, "20": 3, "25": 3, "3": 4, "15": 3, "1": 2}
_ASSESSED_SHARE = 0.6
_REHABILITATION_SHARE = 0.08
_D_NUMBER_SHARE = 0.03


def generate_export(
    out: Path | BinaryIO,
    *,
    recipients: int,
    seed: int,
    municipality: str = "9999",
    year: int = 2023,
    service_units: Sequence[str] = DEMO_SERVICE_UNITS,
    epj_system: str = "DemoEPJ",
    epj_version: str = "4.2.0",
    test_persons: int = 0,
) -> Written:
    """Write a synthetic export v1 to `out` (a path is replaced atomically).

    `test_persons` recipients are named "Donald Duck", the EPJ test user the
    KPR letter says must never reach the register; the rest carry no name.
    """
    header = synthetic_header(
        municipality=municipality, year=year, epj_system=epj_system, epj_version=epj_version
    )
    records = synthetic_recipients(
        recipients=recipients,
        seed=seed,
        year=year,
        service_units=service_units,
        test_persons=test_persons,
    )
    if not isinstance(out, Path):
        return write_export(header, records, out, include_names=True)
    with atomic_file(out) as fh:  # an interrupted run never leaves half an export
        written = write_export(header, records, fh, include_names=True)
    return written


def synthetic_header(
    *, municipality: str, year: int, epj_system: str, epj_version: str
) -> ExportHeader:
    """The header `generate_export` writes; extracted on 3 January after the year."""
    if len(municipality) != 4 or not municipality.isdigit():
        raise UsageError(f"municipality must be a 4-digit kommunenummer, got {municipality!r}")
    return ExportHeader(
        municipality=municipality,
        reporting_year=year,
        epj_system=epj_system,
        epj_version=epj_version,
        extracted_at=dt.datetime(year + 1, 1, 3, 8, 0, tzinfo=dt.UTC),
    )


def synthetic_recipients(
    *,
    recipients: int,
    seed: int,
    year: int = 2023,
    service_units: Sequence[str] = DEMO_SERVICE_UNITS,
    test_persons: int = 0,
) -> Iterator[Recipient]:
    """`recipients` synthetic records, generated lazily in export order."""
    if recipients < 0:
        raise UsageError(f"--recipients must be 0 or more, got {recipients}")
    if not 0 <= test_persons <= recipients:
        raise UsageError(f"test persons must be between 0 and {recipients}, got {test_persons}")
    units = tuple(service_units)
    bad = [u for u in units if not is_valid_org_number(u)]
    if not units or bad:
        raise UsageError(
            "service units must be one or more valid 9-digit org numbers"
            + (f" ({', '.join(bad)} fails the mod-11 check)" if bad else "")
        )
    rules = {code: sc.org_number for code, sc in load_profile(year).service_codes.items()}
    return _generate(random.Random(seed), recipients, year, units, rules, test_persons)


def _generate(
    rng: random.Random,
    count: int,
    year: int,
    units: tuple[str, ...],
    rules: dict[str, OrgNumberRule],
    test_persons: int,
) -> Iterator[Recipient]:
    test_indexes = frozenset(rng.sample(range(count), test_persons)) if test_persons else ()
    used: set[str] = set()
    year_start = dt.date(year, 1, 1).toordinal()
    days_in_year = dt.date(year, 12, 31).toordinal() - year_start + 1
    for index in range(count):
        codes = _pick_codes(rng)
        services = tuple(
            _service(rng, code, year_start, days_in_year, units, rules.get(code)) for code in codes
        )
        yield Recipient(
            index=index,
            local_id=f"r-{index + 1:06d}",
            person_id=_person_id(rng, year, used),
            name=TEST_PERSON_NAME if index in test_indexes else None,
            rehabilitation=rng.random() < _REHABILITATION_SHARE,
            services=services,
            assessments=_assessments(rng, codes, year_start, days_in_year),
        )


def _pick_codes(rng: random.Random) -> list[str]:
    if rng.random() < _LONG_TERM_SHARE:
        return ["21"] if rng.random() >= 0.1 else ["21", "24"]
    codes = [code for code, share in _HOME_SERVICES if rng.random() < share]
    if rng.random() < _SHORT_STAY_SHARE:
        codes.append(_SHORT_STAYS[rng.randrange(3)])
    return codes or ["15"]


def _service(
    rng: random.Random,
    code: str,
    year_start: int,
    days_in_year: int,
    units: tuple[str, ...],
    rule: OrgNumberRule | None,
) -> Service:
    if code in _STAY_DAYS:
        shortest, longest = _STAY_DAYS[code]
        first = year_start + rng.randrange(days_in_year - longest)
        start = dt.date.fromordinal(first)
        end: dt.date | None = dt.date.fromordinal(first + rng.randint(shortest, longest))
    else:
        if rng.random() < 0.45:  # running since an earlier year
            first = year_start - rng.randint(1, 6 * 365)
        else:
            first = year_start + rng.randrange(days_in_year)
        start = dt.date.fromordinal(first)
        last = year_start + days_in_year - 1
        ends = rng.random() < 0.2 and first < last
        end = dt.date.fromordinal(rng.randint(max(first, year_start), last)) if ends else None
    hours = None
    if code in _HOURS:
        lowest, highest = _HOURS[code]
        # Skewed towards small vedtak, in quarter hours, never above 168 a week.
        hours = min(168.0, round((lowest + (highest - lowest) * rng.random() ** 2) * 4) / 4)
    decision = None
    if rng.random() < 0.6:
        decision = dt.date.fromordinal(first - rng.randint(1, 21))
    org = None
    if rule == "required" or (rule == "optional" and rng.random() < 0.5):
        org = units[rng.randrange(len(units))]
    return Service(
        code=code,
        start=start,
        end=end,
        hours_per_week=hours,
        decision_date=decision,
        org_number=org,
    )


def _assessments(
    rng: random.Random, codes: list[str], year_start: int, days_in_year: int
) -> tuple[Assessment, ...]:
    if rng.random() >= _ASSESSED_SHARE:
        return ()
    need = max((_NEED.get(code, 1) for code in codes), default=1)
    date = dt.date.fromordinal(year_start + rng.randrange(days_in_year))
    # Most assessments score every variable (a complete kartlegging); some are partial.
    count = len(ASSESSMENT_VARIABLES) if rng.random() < 0.85 else rng.randint(4, 8)
    variables = sorted(rng.sample(range(len(ASSESSMENT_VARIABLES)), count))
    out = []
    for v in variables:
        score = 9 if rng.random() < 0.04 else min(5, max(1, need + rng.choice((-1, 0, 0, 1))))
        out.append(Assessment(variable=ASSESSMENT_VARIABLES[v], score=score, date=date))
    return tuple(out)


def _person_id(rng: random.Random, year: int, used: set[str]) -> str:
    """A fresh Test-Norge number (month + 80) with valid control digits; mostly elderly."""
    while True:
        roll = rng.random()
        if roll < 0.75:
            age = rng.randint(67, 100)
        elif roll < 0.9:
            age = rng.randint(40, 66)
        else:
            age = rng.randint(5, 39)
        born = dt.date(year - age, 1, 1) + dt.timedelta(days=rng.randrange(365))
        day = born.day + (40 if rng.random() < _D_NUMBER_SHARE else 0)
        # Individnummer 000–499 for 1900–1999, 500–999 for 2000–2039 (DOMAIN.md §6.1).
        individ = rng.randrange(0, 500) if born.year < 2000 else rng.randrange(500, 1000)
        first9 = f"{day:02d}{born.month + 80:02d}{born.year % 100:02d}{individ:03d}"
        control = person_control_digits(first9)
        if control is None:
            continue
        person_id = f"{first9}{control[0]}{control[1]}"
        if person_id not in used:
            used.add(person_id)
            return person_id
