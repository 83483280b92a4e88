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
from tests.conftest import DEMO_MANIFEST, planted_person_id

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
    pid: str | None = None,
    local_id: str | None = None,
    name: str | None = None,
    rehab: bool = False,
    assessments: tuple[Assessment, ...] = (),
) -> Recipient:
    return Recipient(
        index=index,
        local_id=f"r{index}" if local_id is None else local_id,
        # A distinct Test-Norge number per index, so only the tests that want a
        # repeated person (person-id-unique) have one.
        person_id=(TNR if index == 0 else planted_person_id(f"{index + 1:02d}9038"))
        if pid is None
        else pid,
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
        "hours-overlap",
        "local-id-unique",
        "person-id-unique",
    }
    assert all(r.source for r in rules)


# --- rules across rows and records (issue 11 item 8) ----------------------------------


def hours_rows(*rows: tuple[float, dt.date | None, dt.date | None]) -> tuple[Service, ...]:
    return tuple(
        svc("15", "310000027", hours_per_week=h, start=start, end=end) for h, start, end in rows
    )


def test_overlapping_rows_of_one_service_share_the_168_hour_limit(manifest) -> None:  # type: ignore[no-untyped-def]
    jan, mar, jun, dec = (dt.date(2023, m, 1) for m in (1, 3, 6, 12))
    ctx = ctx_for(manifest)
    # Two rows of 100 h for the same service and the same months: 200 h a week.
    found, _ = findings(ctx, person(0, *hours_rows((100, jan, jun), (100, mar, dec))))
    (f,) = by_rule(found, "hours-overlap")
    assert (f.severity, f.count, [r.index for r in f.records]) == ("error", 1, [0])
    assert "more than 168 hours per week" in f.message and "service 15" in f.message
    assert "100" not in f.message and "200" not in f.message  # no per-person value
    assert by_rule(found, "hours") == []  # each row alone is within the limit
    # An open start or end counts as running: the open row overlaps everything.
    found, _ = findings(ctx, person(0, *hours_rows((100, None, None), (100, mar, jun))))
    assert len(by_rule(found, "hours-overlap")) == 1
    # Exactly the limit is allowed, as it is for one row.
    found, _ = findings(ctx, person(0, *hours_rows((84, jan, None), (84, mar, None))))
    assert by_rule(found, "hours-overlap") == []


def test_rows_that_follow_each_other_or_differ_in_code_are_not_summed(manifest) -> None:  # type: ignore[no-untyped-def]
    jan, jun, dec = (dt.date(2023, m, 1) for m in (1, 6, 12))
    ctx = ctx_for(manifest)
    handover = person(0, *hours_rows((100, jan, jun), (100, jun, dec)))
    other_code = person(
        1,
        svc("15", "310000027", hours_per_week=100, start=jan),
        svc("1", "310000027", hours_per_week=100, start=jan),
    )
    other_person = person(2, *hours_rows((100, jan, None)))
    found, _ = findings(
        ctx, handover, other_code, other_person, person(3, *hours_rows((100, jan, None)))
    )
    assert by_rule(found, "hours-overlap") == []
    # A one-day row overlaps a row running that day.
    found, _ = findings(ctx, person(0, *hours_rows((100, jun, jun), (100, jan, dec))))
    assert len(by_rule(found, "hours-overlap")) == 1


def test_one_row_over_the_limit_is_the_hours_rule_alone(manifest) -> None:  # type: ignore[no-untyped-def]
    jan = dt.date(2023, 1, 1)
    found, _ = findings(
        ctx_for(manifest), person(0, *hours_rows((200, jan, None), (10, jan, None)))
    )
    assert len(by_rule(found, "hours")) == 1
    assert by_rule(found, "hours-overlap") == []


def test_a_repeated_local_id_is_an_error_naming_both_records(manifest) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_for(manifest)
    records = [
        person(0, svc("15", "310000027"), local_id="A"),
        person(1, svc("15", "310000027"), local_id="B"),
        person(2, svc("6"), local_id="A"),
        person(3, svc("6"), local_id="A"),
    ]
    found, _ = findings(ctx, *records)
    (f,) = by_rule(found, "local-id-unique")
    assert (f.severity, f.count) == ("error", 3)
    assert [(r.index, r.line) for r in f.records] == [(0, 10), (2, 12), (3, 13)]
    assert "A" not in f.message.replace("LocalId", "")
    # Distinct LocalIds: nothing.
    found, _ = findings(ctx, *(dataclasses.replace(r, local_id=f"x{r.index}") for r in records))
    assert by_rule(found, "local-id-unique") == []


def test_a_repeated_local_id_blocks_the_plan(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from iplosctl.manifest import load_manifest as load
    from iplosctl.plan import plan_submission

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    export = tmp_path / "exports" / "demo-2023.xml"
    export.parent.mkdir()
    original = (DEMO_MANIFEST.parent / "../examples/exports/demo-2023.xml").resolve()
    xml = original.read_text(encoding="utf-8").replace("r-000002", "r-000001")
    export.write_text(xml, encoding="utf-8")
    (tmp_path / "manifests").mkdir()
    manifest_path = tmp_path / "manifests" / "demo-2023.yaml"
    manifest_path.write_text(
        text.replace("../examples/exports/demo-2023.xml", "../exports/demo-2023.xml"),
        encoding="utf-8",
    )
    plan = plan_submission(load(manifest_path), today=dt.date(2024, 1, 5))
    assert plan.action == "blocked" and "local-id-unique" in plan.reason
    (f,) = [f for f in plan.findings if f.rule == "local-id-unique"]
    assert [r.index for r in f.records] == [0, 1]


def test_one_person_under_two_local_ids_is_an_error(manifest) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_for(manifest)
    other = planted_person_id("079038")
    records = [
        person(0, svc("15", "310000027"), pid=TNR, local_id="A"),
        person(1, svc("15", "310000027"), pid=other, local_id="B"),
        person(2, svc("6"), pid=TNR, local_id="C"),
    ]
    found, _ = findings(ctx, *records)
    (f,) = by_rule(found, "person-id-unique")
    assert (f.severity, f.count, [r.index for r in f.records]) == ("error", 2, [0, 2])
    assert TNR not in f.message
    # The same person under the same LocalId twice is local-id-unique's finding only.
    same_local = dataclasses.replace(records[2], local_id="A")
    found, _ = findings(ctx, records[0], records[1], same_local)
    assert by_rule(found, "person-id-unique") == []
    assert by_rule(found, "local-id-unique")[0].count == 2
    # Records without a person id (a KPR_IPL-only export) are not compared.
    found, _ = findings(ctx, person(0, pid=""), person(1, pid=""))
    assert by_rule(found, "person-id-unique") == []


def test_repeat_rules_keep_digests_not_ids(manifest) -> None:  # type: ignore[no-untyped-def]
    from iplosctl.rules.kpr import local_id_unique, person_id_unique

    ctx = ctx_for(manifest)
    local, people = local_id_unique(), person_id_unique()
    record = person(0, svc("15", "310000027"), pid=TNR, local_id="journal-77")
    for rule in (local, people):
        list(rule.check_record(ctx, record))
    for rule in (local, people):
        state = repr(vars(rule)) + repr(vars(rule._seen))
        assert TNR not in state and "journal-77" not in state
        assert len(rule._seen) == 1


def test_the_repeat_rules_cannot_be_turned_down(manifest) -> None:  # type: ignore[no-untyped-def]
    overrides = {"local-id-unique": "off", "person-id-unique": "warning", "hours-overlap": "off"}
    ctx = ctx_for(manifest, rule_severities=overrides)
    jan = dt.date(2023, 1, 1)
    records = [
        person(0, *hours_rows((100, jan, None), (100, jan, None)), local_id="A"),
        person(1, svc("6"), local_id="A"),
        person(2, svc("6"), pid=TNR, local_id="B"),
    ]
    found, _ = findings(ctx, *records)
    for rule in ("local-id-unique", "person-id-unique"):
        error, ignored = sorted(by_rule(found, rule), key=lambda f: f.severity)
        assert error.severity == "error" and error.count == 2
        assert ignored.severity == "warning" and f"spec.rules.{rule} is ignored" in ignored.message
    assert by_rule(found, "hours-overlap") == []  # an ordinary rule can be turned off
