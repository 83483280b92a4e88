"""Each pre-flight rule on hand-made records (no export file needed)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from iplosctl.identifiers import person_control_digits
from iplosctl.manifest import load_manifest
from iplosctl.profiles import load_profile
from iplosctl.records import Assessment, ExportHeader, Recipient, Service
from iplosctl.rules import RuleContext, RuleRun, load_rules
from tests.conftest import DEMO_MANIFEST

TNR = "05903813050"  # Test-Norge (month + 80), valid check digits
FNR_BAD = "05903813051"
# an H-number (month + 40) with right check digits, built here: no real-looking literal
H_NUMBER = "055038100" + "".join(map(str, person_control_digits("055038100") or ()))


@pytest.fixture
def manifest():  # type: ignore[no-untyped-def]
    return load_manifest(DEMO_MANIFEST)


def ctx_for(
    manifest,
    *,
    environment: str = "sandbox",
    today: dt.date = dt.date(2024, 1, 5),
    header: ExportHeader | None = None,
    previous=None,
    late: bool = False,
    **changes,
) -> RuleContext:  # type: ignore[no-untyped-def]
    m = dataclasses.replace(manifest, environment=environment, **changes)
    profile = load_profile(m.reporting_year)
    return RuleContext(
        manifest=m,
        profile=profile,
        environment=profile.environments[environment],
        header=header or ExportHeader("9999", 2023, "DemoEPJ", "4.2.0"),
        previous_summary=previous,
        today=today,
        late=late,
    )


def person(
    index: int = 0,
    *services: Service,
    pid: str = TNR,
    name: str | None = None,
    rehab: bool = False,
    assessments: tuple[Assessment, ...] = (),
) -> Recipient:
    return Recipient(
        index=index,
        local_id=f"r{index}",
        person_id=pid,
        name=name,
        services=services,
        rehabilitation=rehab,
        assessments=assessments,
        line=10 + index,
    )


def svc(code: str, org: str | None = None, **kw) -> Service:  # type: ignore[no-untyped-def]
    return Service(code=code, org_number=org, start=kw.pop("start", dt.date(2023, 2, 1)), **kw)


def findings(ctx: RuleContext, *records: Recipient):  # type: ignore[no-untyped-def]
    run = RuleRun(load_rules(), ctx)
    included = [r for r in records if run.record(r)]
    return run.finish(), included


def by_rule(found, rule: str):  # type: ignore[no-untyped-def]
    return [f for f in found if f.rule == rule]


def test_clean_records_give_no_errors(manifest) -> None:  # type: ignore[no-untyped-def]
    found, included = findings(
        ctx_for(manifest),
        person(0, svc("15", "310000027"), svc("6"), rehab=True),
        person(1, svc("21", "310000035")),
    )
    assert [f for f in found if f.severity == "error"] == []
    assert len(included) == 2


def test_test_persons_are_excluded_and_counted(manifest) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_for(manifest)
    found, included = findings(
        ctx,
        person(0, svc("15", "310000027"), name="Duck, Donald"),
        person(1, svc("15", "310000027"), name="testesen   TEST"),
        person(2, svc("15", "310000027"), name="Ola Nordmann"),
    )
    assert [r.index for r in included] == [2]
    (f,) = by_rule(found, "test-person")
    assert f.count == 2 and f.severity == "info"
    assert [r.index for r in f.records] == [0, 1]


def test_test_norge_numbers_are_test_persons_only_in_production(manifest) -> None:  # type: ignore[no-untyped-def]
    rec = person(0, svc("15", "310000027"))
    _, included = findings(ctx_for(manifest, environment="sandbox"), rec)
    assert included == [rec]
    prod = ctx_for(manifest, environment="production", today=dt.date(2024, 1, 5))
    found, included = findings(prod, rec)
    assert included == []
    assert "Test-Norge number in production" in by_rule(found, "test-person")[0].message


def test_person_id(manifest) -> None:  # type: ignore[no-untyped-def]
    found, _ = findings(
        ctx_for(manifest),
        person(0, pid=FNR_BAD),
        person(1, pid="123"),
        person(2, pid=""),
        person(3, pid=H_NUMBER),
    )
    messages = {f.message: f for f in by_rule(found, "person-id")}
    assert messages["fødselsnummer/D-number with wrong check digits"].records[0].index == 0
    assert "person id is not 11 digits" in messages
    assert "person id missing" in messages
    h = next(f for f in by_rule(found, "person-id") if "H-number" in f.message)
    assert h.severity == "warning"
    assert all(FNR_BAD not in f.message for f in found)


def test_org_number_rules(manifest) -> None:  # type: ignore[no-untyped-def]
    found, _ = findings(
        ctx_for(manifest),
        person(0, svc("21")),  # required, missing
        person(1, svc("26", "310000027")),  # forbidden
        person(2, svc("15", "310000018")),  # bad check digit
        person(3, svc("15", "310000051")),  # valid, not a service unit
        person(4, svc("6")),  # optional, absent: fine
    )
    messages = [f.message for f in by_rule(found, "org-number")]
    assert any("code 21" in m and "requires" in m for m in messages)
    assert any("code 26" in m and "must not" in m for m in messages)
    assert "org number 310000018 has a bad check digit" in messages
    assert "org number 310000051 is not one of the manifest's serviceUnits" in messages
    assert len(messages) == 4


def test_housing_codes(manifest) -> None:  # type: ignore[no-untyped-def]
    found, _ = findings(
        ctx_for(manifest),
        person(0, svc("12")),
        person(1, svc("13")),
        person(2, svc("29", "310000043")),
        person(3, svc("29")),
    )
    messages = sorted(f.message for f in by_rule(found, "housing-code"))
    assert messages == [
        "code 29 (housing) must not carry an org number",
        "housing code 12 is obsolete since 2019: use 29",
        "housing code 13 is obsolete since 2019: use 29",
    ]
    assert by_rule(found, "service-code") == []  # 12/13 are reported once, by housing-code
    assert by_rule(found, "org-number") == []


def test_service_code_hours_score_period(manifest) -> None:  # type: ignore[no-untyped-def]
    found, _ = findings(
        ctx_for(manifest),
        person(0, svc("10")),
        person(1, svc("15", "310000027", hours_per_week=168.5)),
        person(2, assessments=(Assessment("1", 7), Assessment("99", 3))),
        person(3, svc("6", start=dt.date(2023, 5, 1), end=dt.date(2023, 4, 1))),
        person(4, svc("6", start=dt.date(2021, 1, 1), end=dt.date(2022, 6, 1))),
    )
    assert (
        by_rule(found, "service-code")[0].message == "service code 10 is not in list 9151 for 2023"
    )
    assert "more than 168 hours" in by_rule(found, "hours")[0].message
    assert {f.message for f in by_rule(found, "score")} == {
        "assessment score 7 is not 1–5 or 9",
        "unknown assessment variable '99'",
    }
    period = {f.message: f.severity for f in by_rule(found, "period")}
    assert period == {
        "service 6 ends before it starts": "error",
        "service 6 lies entirely outside 2023": "warning",
    }


def test_header_rules(manifest) -> None:  # type: ignore[no-untyped-def]
    header = ExportHeader("1234", 2022, "OtherEPJ", "1.0")
    found, _ = findings(ctx_for(manifest, header=header))
    assert by_rule(found, "municipality")[0].message == (
        "the export is from municipality 1234 but the manifest is for 9999"
    )
    assert "the export is for 2022" in by_rule(found, "period")[0].message
    assert "stale manifest or an old extract" in by_rule(found, "epj-version")[0].message


def test_epj_minimum_version(manifest) -> None:  # type: ignore[no-untyped-def]
    old = ctx_for(manifest, epj_minimum_versions={"DemoEPJ": "4.10"})
    found, _ = findings(old)
    assert "below the minimum 4.10" in by_rule(found, "epj-version")[0].message  # 4.2 < 4.10
    unknown = ctx_for(manifest, epj_minimum_versions={})
    (f,) = by_rule(findings(unknown)[0], "epj-version")
    assert f.severity == "warning" and "cannot verify" in f.message


def test_welfare_technology_and_rehabilitation(manifest) -> None:  # type: ignore[no-untyped-def]
    found, _ = findings(ctx_for(manifest), person(0, svc("15", "310000027")))
    assert (
        "no recipient is registered with welfare technology"
        in by_rule(found, "welfare-technology")[0].message
    )
    assert by_rule(found, "rehabilitation")[0].severity == "warning"
    ctx = ctx_for(manifest, previous={"welfareTechnology": 40, "rehabilitation": "<5"})
    recs = [person(i, svc("6"), rehab=True) for i in range(12)]
    found, _ = findings(ctx, *recs)
    assert by_rule(found, "welfare-technology")[0].message == (
        "12 recipients with welfare technology (codes 6, 26, 27, 28), fewer than half of the "
        "last accepted submission's 40"
    )
    assert by_rule(found, "rehabilitation") == []


@pytest.mark.parametrize(
    ("today", "late", "severity", "text"),
    [
        (dt.date(2024, 1, 5), False, "info", "10 days left until the deadline 2024-01-15"),
        (dt.date(2024, 2, 1), False, "error", "the last deadline 2024-01-15 has passed"),
        (dt.date(2024, 2, 1), True, "warning", "send with --late"),
    ],
)
def test_deadline_2023(manifest, today, late, severity, text) -> None:  # type: ignore[no-untyped-def]
    (f,) = by_rule(
        findings(ctx_for(manifest, environment="production", today=today, late=late))[0],
        "deadline",
    )
    assert f.severity == severity and text in f.message


def test_deadline_does_not_block_kprs_test_receiver(manifest) -> None:  # type: ignore[no-untyped-def]
    """Issue 13: a communication test after the deadline needs no --late and no e-mail."""
    ctx = ctx_for(manifest, environment="test", today=dt.date(2024, 2, 1))
    (f,) = by_rule(findings(ctx)[0], "deadline")
    assert f.severity == "info"
    assert "deadlines apply to production, not to this receiver" in f.message


def test_deadline_2021_correction_window(manifest) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_for(
        manifest,
        environment="production",
        today=dt.date(2022, 1, 20),
        reporting_year=2021,
        header=ExportHeader("9999", 2021, "DemoEPJ", "4.2.0"),
    )
    (f,) = by_rule(findings(ctx)[0], "deadline")
    assert f.severity == "warning"
    assert "by 2022-02-10" in f.message and "KOSTRA" in f.message
    assert "registervakt@kundesenter.nhn.no" in f.message


def test_severity_override_and_off(manifest) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_for(manifest, rule_severities={"hours": "warning", "welfare-technology": "off"})
    found, _ = findings(ctx, person(0, svc("15", "310000027", hours_per_week=200)))
    assert by_rule(found, "hours")[0].severity == "warning"
    assert by_rule(found, "welfare-technology") == []


def test_rule_ids_are_unique_and_cited() -> None:
    rules = load_rules()
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    assert set(ids) >= {
        "epj-version",
        "test-person",
        "welfare-technology",
        "rehabilitation",
        "housing-code",
        "org-number",
        "person-id",
        "service-code",
        "hours",
        "score",
        "period",
        "municipality",
        "deadline",
    }
    assert all(r.source for r in rules)
