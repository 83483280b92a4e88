"""Issue 11: exports shaped like other EPJs', read through profiles that are data.

Three exports of the same synthetic recipients (tests/shapes.py) in genuinely
different shapes, each with its own XSD and profile in tests/data/formats, must
plan exactly like export v1 of the same data: same summary, same findings (by
rule, message, count and record indices; lines differ by shape), same part
digests. Then the profile's mistakes: each one line naming the profile, exit 1,
nothing sent, the lockfile untouched; and the zero findings that stop an empty
submission.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from iplosctl.manifest import load_manifest
from iplosctl.plan import plan_submission
from iplosctl.plugins import SourceSpec
from iplosctl_source_xml import XmlSource
from tests.conftest import DEMO_MANIFEST
from tests.shapes import FORMATS, SHAPES, records, write_shape, write_v1

SEED = 11
TODAY = "2024-01-05"


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def manifest_for(folder: Path, export: Path, profile: Path | None, name: str = "demo-2023") -> Path:
    """The demo manifest, reading `export` through `profile` (export v1 when None)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    text = text.replace("path: ../examples/exports/demo-2023.xml", f"path: {export}")
    text = text.replace("format: iplos-export-v1", f"format: {profile or 'iplos-export-v1'}")
    assert str(export) in text
    target = folder / f"{name}.yaml"
    target.write_text(text, encoding="utf-8")
    return target


def plan_of(manifest: Path) -> Any:
    import datetime as dt

    return plan_submission(load_manifest(manifest), today=dt.date.fromisoformat(TODAY))


def comparable(plan: Any) -> dict[str, Any]:
    """What must not depend on the export's shape."""
    return {
        "summary": plan.summary,
        "findings": [
            (f.rule, f.severity, f.message, f.count, [r.index for r in f.records])
            for f in plan.findings
        ],
        "parts": [(p.type, p.payload_digest, p.size_bytes) for p in plan.parts],
        "payload": plan.payload_digest,
        "action": plan.action,
    }


def stripped(recipient: Any) -> Any:
    """A record without its line numbers (they depend on the shape, nothing else may)."""
    services = tuple(dataclasses.replace(s, line=None) for s in recipient.services)
    return dataclasses.replace(recipient, line=None, services=services)


# --- same data, three shapes, one result ------------------------------------------------


@pytest.mark.parametrize("count", [25, 1200])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_plans_exactly_like_export_v1(shape: str, count: int, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.xml"
    write_v1(v1, count, SEED, test_persons=2)
    other = write_shape(shape, tmp_path / f"{shape}.xml", count, SEED, test_persons=2)
    assert other.read_bytes() != v1.read_bytes()
    expected = comparable(plan_of(manifest_for(tmp_path / "m1", v1, None)))
    got = comparable(plan_of(manifest_for(tmp_path / "m2", other, FORMATS / f"{shape}.yaml")))
    assert got == expected
    assert expected["summary"]["recipients"] == count - 2  # the test persons are excluded
    assert expected["action"] == "submit"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_reads_the_same_records_and_counts_its_fields(
    shape: str, tmp_path: Path
) -> None:
    header, people = records(300, SEED)
    path = write_shape(shape, tmp_path / f"{shape}.xml", 300, SEED)
    export = XmlSource().read(SourceSpec(path, str(FORMATS / f"{shape}.yaml")))
    assert export.header == header
    assert [stripped(r) for r in export.recipients] == [stripped(r) for r in people]
    cov = export.coverage
    assert cov is not None
    services = sum(len(r.services) for r in people)
    assessments = sum(len(r.assessments) for r in people)
    assert (cov.items["recipient"], cov.items["service"], cov.items["assessment"]) == (
        300,
        services,
        assessments,
    )
    assert cov.present["recipient.localId"] == 300
    assert cov.present["service.hoursPerWeek"] == sum(
        1 for r in people for s in r.services if s.hours_per_week is not None
    )
    assert cov.present["service.to"] == sum(1 for r in people for s in r.services if s.end)
    assert cov.mapped["service.code"] and "recipient.name" in cov.optional
    assert cov.unread == []


def test_linked_lists_in_another_order_give_the_same_records(tmp_path: Path) -> None:
    """The item lists' order among themselves and the recipients' does not matter."""
    header, people = records(200, SEED)
    text = SHAPES["vendor-b"](header, people, SEED)
    blocks = re.findall(r"  <b:(\w+)>\n.*?  </b:\1>\n", text, re.S)
    assert blocks == ["Kartlegginger", "Mottakere", "Tjenester"]
    body = {
        name: re.search(rf"  <b:{name}>\n.*?  </b:{name}>\n", text, re.S)[0]  # type: ignore[index]
        for name in blocks
    }
    head = text[: text.index("  <b:Kartlegginger>")]
    reordered = head + body["Tjenester"] + body["Mottakere"] + body["Kartlegginger"]
    path = tmp_path / "b.xml"
    path.write_text(reordered + "</b:Eksport>\n", encoding="utf-8")
    export = XmlSource().read(SourceSpec(path, str(FORMATS / "vendor-b.yaml")))
    assert [stripped(r) for r in export.recipients] == [stripped(r) for r in people]


def test_two_recipients_with_one_join_key_is_a_located_error(tmp_path: Path) -> None:
    header, people = records(30, SEED)
    text = SHAPES["vendor-b"](header, people, SEED)
    second = people[7].local_id
    assert text.count(f"<b:Id>{second}</b:Id>") == 1
    text = text.replace(f"<b:Id>{second}</b:Id>", f"<b:Id>{people[3].local_id}</b:Id>")
    path = tmp_path / "b.xml"
    path.write_text(text, encoding="utf-8")
    line = text[: text.index(f"<b:Id>{people[3].local_id}</b:Id><b:Fnr>{people[7].person_id}")]
    from iplosctl.errors import SourceError

    with pytest.raises(SourceError) as info:
        list(XmlSource().read(SourceSpec(path, str(FORMATS / "vendor-b.yaml"))).recipients)
    (problem,) = info.value.problems
    assert problem.location.file == str(path)
    assert problem.location.line == line.count("\n") + 1
    assert problem.message.startswith("record 8: two recipients have the same localId (b:Id)")
    assert people[3].local_id not in str(info.value)


# --- the profile's mistakes ---------------------------------------------------------------


def broken_profile(folder: Path, shape: str, old: str, new: str) -> Path:
    """A copy of a test profile (and its XSD) with one text replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FORMATS / f"{shape}.xsd", folder / f"{shape}.xsd")
    text = (FORMATS / f"{shape}.yaml").read_text(encoding="utf-8")
    assert old in text, old
    target = folder / f"{shape}.yaml"
    target.write_text(text.replace(old, new, 1), encoding="utf-8")
    return target


BAD_PROFILES: dict[str, tuple[str, str, str, str]] = {
    # case: (shape, old, new, expected words)
    "broken-xpath": (
        "vendor-c",
        "personId: c:Person/c:Ssn",
        "personId: c:Person/c:Ssn[[",
        "broken format profile vendor-c.yaml: recipient.fields.personId: invalid XPath",
    ),
    "unbound-prefix": (
        "vendor-a",
        "personId: {path: a:Fnr,",
        "personId: {path: z:Fnr,",
        "broken format profile vendor-a.yaml: recipient.fields.personId: prefix 'z' is not",
    ),
    "converter-never-matches": (
        "vendor-a",
        'from: {path: "@fra", patterns: ["%d.%m.%Y"]',
        'from: {path: "@fra", patterns: ["%Y/%m/%d"]',
        "the format profile vendor-a.yaml cannot read from (attribute 'fra') of <Vedtak>: "
        "it matches none of the patterns %Y/%m/%d (record 1)",
    ),
    "join-key-references-nothing": (
        "vendor-b",
        "join: {key: b:MottakerRef, references: localId}",
        "join: {key: b:MottakerRef, references: personId}",
        "joined item(s) name a recipient by personId (b:MottakerRef) that is not in the export",
    ),
    "join-key-missing": (
        "vendor-b",
        'join: {key: "@mottaker", references: localId}',
        'join: {key: "@mottakerId", references: localId}',
        "the format profile vendor-b.yaml cannot read <Kartlegging>: it has no join key "
        "(@mottakerId)",
    ),
    "value-map-without-the-value": (
        "vendor-a",
        'HJSPL: "15", ',
        "",
        "the format profile vendor-a.yaml cannot read code (attribute 'tjeneste') of "
        "<Vedtak>: its value is not listed in the field's map",
    ),
}


COMPILE_ERRORS = {"broken-xpath", "unbound-prefix"}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_a_profile_mistake_is_one_line_naming_the_profile_and_sends_nothing(
    case: str, tmp_path: Path, cli
) -> None:
    shape, old, new, expected = BAD_PROFILES[case]
    profile = broken_profile(tmp_path / "profiles", shape, old, new)
    export = write_shape(shape, tmp_path / f"{shape}.xml", 40, SEED)
    manifest = manifest_for(tmp_path / "manifests", export, profile)
    before = sorted(p.name for p in manifest.parent.iterdir())
    for command in (("plan",), ("apply", "--auto-approve")):
        result = cli(*command, "--today", TODAY, manifest)
        assert result.code == 1, result.all
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.err
        assert expected in errors[0], errors[0]
        # A profile that does not compile is the manifest's `spec.source.format` (validate
        # finds it); a profile that cannot read the export names the export and its line.
        named = manifest if case in COMPILE_ERRORS else export
        assert errors[0].startswith(f"error: {named}:"), errors[0]
        assert "Traceback" not in result.all and "this is a bug" not in result.all
        for _header, people in [records(40, SEED)]:
            for r in people:
                assert r.person_id not in result.all
        assert "HJSPL" not in result.all and "01.0" not in errors[0]  # no values
    # nothing sent: no lockfile (apply's advisory `.lock` beside it holds no state, nor does
    # the git-ignored local state folder `.iplosctl/`, beside the manifest outside a repo)
    after = sorted(
        p.name for p in manifest.parent.iterdir() if p.suffix != ".lock" and p.name != ".iplosctl"
    )
    assert after == before
    assert not load_manifest(manifest).lockfile_path.exists()


# --- zero is suspicious -------------------------------------------------------------------


HOURS = "hoursPerWeek: c:Hours"


def test_a_recipient_element_that_matches_nothing_blocks(tmp_path: Path, cli) -> None:
    profile = broken_profile(tmp_path / "p", "vendor-a", "element: a:Bruker", "element: a:Brukar")
    export = write_shape("vendor-a", tmp_path / "a.xml", 30, SEED)
    manifest = manifest_for(tmp_path / "m", export, profile)
    result = cli("plan", "--today", TODAY, "--format", "json", manifest)
    assert result.code == 1, result.all
    import json

    (sub,) = json.loads(result.out)["submissions"]
    assert sub["action"] == "blocked"
    rules = {f["rule"]: f for f in sub["findings"]}
    assert rules["export-no-recipients"]["severity"] == "error"
    assert "vendor-a.yaml" in rules["export-no-recipients"]["message"]


def test_an_item_element_or_field_that_matches_nothing_points_at_the_profile(
    tmp_path: Path,
) -> None:
    export = write_shape("vendor-c", tmp_path / "c.xml", 30, SEED)
    wrong_services = broken_profile(
        tmp_path / "p1", "vendor-c", "element: c:Services/c:Service", "element: c:Service"
    )
    plan = plan_of(manifest_for(tmp_path / "m1", export, wrong_services))
    assert plan.action == "blocked"
    (finding,) = [f for f in plan.findings if f.rule == "export-no-services"]
    assert "the profile's `c:Service` matched nothing in 30 recipients" in finding.message

    wrong_field = broken_profile(
        tmp_path / "p2", "vendor-c", "hoursPerWeek: c:Hours", "hoursPerWeek: c:Hour"
    )
    plan = plan_of(manifest_for(tmp_path / "m2", export, wrong_field))
    assert plan.action == "blocked"
    (finding,) = [f for f in plan.findings if f.rule == "profile-unmatched"]
    assert finding.severity == "error" and "`c:Hour` (service.hoursPerWeek)" in finding.message
    (unread,) = [f for f in plan.findings if f.rule == "export-unread"]
    assert unread.severity == "warning" and "Hours" in unread.message


def test_zero_findings_come_back_from_the_plan_cache(tmp_path: Path) -> None:
    export = write_shape("vendor-c", tmp_path / "c.xml", 30, SEED)
    profile = broken_profile(
        tmp_path / "p", "vendor-c", "hoursPerWeek: c:Hours", "hoursPerWeek: c:Hour"
    )
    manifest = manifest_for(tmp_path / "m", export, profile)
    first = comparable(plan_of(manifest))
    cache = list((tmp_path / "cache" / "iplosctl" / "plan").glob("*.json"))
    assert len(cache) == 1
    second = comparable(plan_of(manifest))
    assert second == first
    assert any(f[0] == "profile-unmatched" for f in second["findings"])
    assert "profile-unmatched" in cache[0].read_text(encoding="utf-8")


def test_export_v1_itself_has_no_zero_findings(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.xml"
    write_v1(v1, 8, SEED)
    plan = plan_of(manifest_for(tmp_path / "m", v1, None))
    assert not [f for f in plan.findings if f.rule.startswith(("export-", "profile-"))]


# --- blame the right file -----------------------------------------------------------------


def test_an_unreadable_export_is_exit_1_naming_it(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "v1.xml"
    write_v1(export, 5, SEED)
    manifest = manifest_for(tmp_path / "m", export, None)
    export.chmod(0)
    if os.access(export, os.R_OK):  # root reads anything: make the open fail as it would
        real_open = Path.open

        def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == export:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    try:
        result = cli("plan", "--today", TODAY, manifest)
    finally:
        export.chmod(0o600)
    assert result.code == 1, result.all
    assert f"error: {export}: cannot read the export: permission denied" in result.err
    assert "this is a bug" not in result.all


def test_a_folder_given_as_the_export_says_so(tmp_path: Path, cli) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    manifest = manifest_for(tmp_path / "m", folder, None)
    for command in ("validate", "plan"):
        result = cli(command, manifest)
        assert result.code == 1, result.all
        assert "is a folder, not an export file" in result.err
        assert "does not exist" not in result.err


def test_a_value_the_xsd_allows_but_the_profile_cannot_read_blames_the_profile(
    tmp_path: Path,
) -> None:
    """vendor-a's XSD allows any text in `tjeneste`; only the profile's map can be wrong."""
    export = write_shape("vendor-a", tmp_path / "a.xml", 20, SEED)
    profile = broken_profile(tmp_path / "p", "vendor-a", 'ALARM: "6", ', "")
    from iplosctl.errors import SourceError

    with pytest.raises(SourceError) as info:
        list(XmlSource().read(SourceSpec(export, str(profile))).recipients)
    message = str(info.value)
    assert "the format profile vendor-a.yaml cannot read" in message
    assert "fix the export" not in message and "ALARM" not in message
    assert re.match(rf"{re.escape(str(export))}:\d+:1: ", message)


# --- iplosctl format check ----------------------------------------------------------------


def test_format_check_reports_every_field_and_exits_0_on_a_good_profile(
    tmp_path: Path, cli
) -> None:
    export = write_shape("vendor-a", tmp_path / "a.xml", 60, SEED)
    result = cli("format", "check", FORMATS / "vendor-a.yaml", "--sample", export)
    assert result.code == 0, result.all
    assert "format profile vendor-a.yaml" in result.out and "60 recipients" in result.out
    lines = {line.split()[0]: line for line in result.out.splitlines() if line.startswith("  ")}
    assert lines["service.code"].split()[1:4] == [lines["service.code"].split()[2]] * 2 + ["0"]
    assert "reads every record" in result.out


def test_format_check_lists_failed_records_and_unread_elements(tmp_path: Path, cli) -> None:
    export = write_shape("vendor-a", tmp_path / "a.xml", 60, SEED)
    profile = broken_profile(tmp_path / "p", "vendor-a", 'HJSPL: "15", ', "")
    # and one element nobody reads
    profile.write_text(
        profile.read_text(encoding="utf-8").replace(
            "    rehabilitation: {path: a:Rehab, trueValues: [J, Ja], falseValues: [N, Nei]}\n",
            "",
        ),
        encoding="utf-8",
    )
    result = cli("format", "check", profile, "--sample", export)
    assert result.code == 1, result.all
    _header, people = records(60, SEED)
    bad = [r.index for r in people if any(s.code == "15" for s in r.services)]
    (line,) = [x for x in result.out.splitlines() if x.startswith("  service.code")]
    assert f" {len(bad)}: record {bad[0] + 1} (line " in line  # numbered from 1, like lines
    assert "elements no mapping reads: Rehab" in result.out
    assert "HJSPL" not in result.all
    for r in people:
        assert r.person_id not in result.all


SSN = "personId: c:Person/c:Ssn"


def test_format_check_on_a_broken_profile_is_one_line(tmp_path: Path, cli) -> None:
    export = write_shape("vendor-c", tmp_path / "c.xml", 5, SEED)
    profile = broken_profile(
        tmp_path / "p", "vendor-c", "personId: c:Person/c:Ssn", "personId: q:Ssn"
    )
    result = cli("format", "check", profile, "--sample", export)
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "error: broken format profile vendor-c.yaml: recipient.fields.personId: prefix 'q' is "
        "not declared in namespaces"
    ]
