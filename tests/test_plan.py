"""`iplosctl plan`: actions, formats, saved plans, the cache, exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl import plugins
from iplosctl.manifest import load_manifest
from iplosctl.plan import Plan, lineage_for, make_plan
from iplosctl.render import render_markdown
from iplosctl.sandbox.generate import generate_export
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_demo_plan_submits(cli, demo_copy: Path) -> None:
    result = cli("plan", demo_copy)
    assert result.code == 0, result.all
    first = result.out.splitlines()[0]
    assert first == "Plan: 1 to submit, 0 to correct, 0 blocked."
    assert "SUBMIT" in result.out and "KPR_IPL" in result.out and "KPR_IDE" in result.out
    assert f"next: iplosctl apply {demo_copy}" in result.out
    assert cli("plan", "--detailed-exitcode", demo_copy).code == 2


def test_json_format(cli, demo_copy: Path) -> None:
    result = cli("plan", "--format", "json", demo_copy)
    data = json.loads(result.out)
    assert data["formatVersion"] == "1"
    (s,) = data["submissions"]
    assert s["name"] == "demo-2023" and s["action"] == "submit"
    assert {"rule", "severity", "count"} <= set(s["findings"][0])
    assert set(s["digests"]) == {"manifest", "source", "payload", "profile"}
    assert s["summary"]["recipients"] == 38
    assert s["deadline"]["window"] == "rehearsal"
    assert result.err.startswith("Plan: ")  # the human line goes to stderr with json


def test_markdown_format(cli, demo_copy: Path) -> None:
    result = cli("plan", "--format", "markdown", demo_copy)
    assert result.out.startswith("### iplosctl plan\n\n**Plan: 1 to submit")
    assert "<details>" in result.out and "</details>" in result.out


def test_saved_plan(cli, demo_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert cli("plan", "--out", out, demo_copy).code == 0
    saved = json.loads(out.read_text())
    (s,) = saved["submissions"]
    assert saved["kind"] == "iplosctl-saved-plan" and saved["toolVersion"]
    assert s["lineage"] == lineage_for(load_manifest(demo_copy)) and s["serial"] == 0
    assert [p["type"] for p in s["parts"]] == ["KPR_IPL", "KPR_IDE"]
    assert all(p["msgId"] and p["payloadDigest"].startswith("sha256:") for p in s["parts"])


def test_errors_block(cli, demo_copy: Path) -> None:
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    text = export.read_text()
    text = text.replace('<Service code="15">', '<Service code="12">', 1)
    export.write_text(text)
    result = cli("plan", demo_copy)
    assert result.code == 1
    assert "BLOCKED" in result.out and "housing code 12 is obsolete" in result.out
    assert result.out.splitlines()[0] == "Plan: 0 to submit, 0 to correct, 1 blocked."


def test_second_plan_uses_the_cache(cli, demo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("plan", demo_copy).code == 0
    source = plugins.load("source", "xml")

    def no_reading(self, spec):  # type: ignore[no-untyped-def]
        raise AssertionError("the export was read again")

    # The plugin is still loaded (it names the format profile files of the cache key);
    # the export must not be read.
    monkeypatch.setattr(source, "read", no_reading)
    cached = cli("plan", demo_copy)
    assert cached.code == 0, cached.all
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    os.utime(export, ns=(1, 1))  # a changed file is read again
    assert cli("plan", demo_copy).code == 3


def _lock_with(manifest_path: Path, states: list[str], payload: str, status: str = "") -> None:
    m = load_manifest(manifest_path)
    lock = lf.Lockfile(submission=m.name, lineage=lineage_for(m))
    parts = [
        lf.Part(t, f"id-{t}", "sha256:x", state=s)
        for t, s in zip(("KPR_IPL", "KPR_IDE"), states, strict=True)
    ]
    if status:
        for p in parts:
            p.receipt = lf.Receipt(
                status=status,
                errors=[
                    lf.ReceiptError(
                        "E31", "2.16.578.1.12.4.1.1.8221", "Pasientens fødselsnummer er feil"
                    )
                ]
                if status == "2"
                else [],
            )
    lock.attempts.append(
        lf.Attempt(
            1,
            "2024-01-03T08:00:00Z",
            m.digest,
            "sha256:s",
            payload,
            {"recipients": 38, "welfareTechnology": 12},
            parts,
        )
    )
    lf.save(m.lockfile_path, lock)


def _current_payload(manifest_path: Path) -> str:
    return make_plan([load_manifest(manifest_path)]).submissions[0].payload_digest


@pytest.mark.parametrize(
    ("states", "same_payload", "status", "action"),
    [
        (["journaled", "journaled"], True, "", "recover"),
        (["sent", "journaled"], False, "", "blocked"),  # journaled, export changed since
        (["sent", "sent"], True, "", "wait"),
        (["accepted", "sent"], True, "", "wait"),
        (["rejected", "accepted"], True, "2", "resubmit"),
        (["transport-error", "sent"], True, "", "wait"),
        (["accepted", "accepted"], True, "1", "no-op"),
        (["accepted", "accepted-with-errors"], False, "1", "correct"),
    ],
)
def test_actions_from_the_lockfile(
    cli, demo_copy: Path, states, same_payload, status, action
) -> None:  # type: ignore[no-untyped-def]
    payload = _current_payload(demo_copy) if same_payload else "sha256:old"
    _lock_with(demo_copy, states, payload, status)
    result = cli("plan", "--format", "json", demo_copy)
    (s,) = json.loads(result.out)["submissions"]
    assert s["action"] == action, s["reason"]
    assert result.code == (1 if action in ("wait", "blocked") else 0)
    if action == "resubmit":
        assert s["attempt"] == 2
        assert s["receiptErrors"][0]["code"] == "E31"
    if action == "recover":
        assert [p["msgId"] for p in s["parts"]] == ["id-KPR_IPL", "id-KPR_IDE"]
    if action in ("correct", "no-op"):
        assert s["previousSummary"]["recipients"] == 38


def test_lockfile_of_another_submission_is_refused(cli, demo_copy: Path) -> None:
    lf.save(demo_copy.with_name("demo-2023.lock.yaml"), lf.new_lockfile("other"))
    result = cli("plan", demo_copy)
    assert result.code == 1
    assert "belongs to submission 'other'" in result.err


def test_markdown_stays_under_60000_characters_for_50_submissions(demo_copy: Path) -> None:
    plan = make_plan([load_manifest(demo_copy)])
    one = plan.submissions[0]
    many = Plan(tuple(dataclasses.replace(one, name=f"kommune-{i:02d}") for i in range(50)))
    text = render_markdown(many)
    assert len(text) < 60_000
    assert text.count("kommune-") >= 100  # the table and a section (or line) each
    assert "**Plan: 50 to submit" in text


def test_only_selects_by_glob(cli, demo_copy: Path) -> None:
    assert cli("plan", "--only", "demo-*", demo_copy.parent).code == 0
    result = cli("plan", "--only", "oslo-*", demo_copy.parent)
    assert result.code == 1 and "matches no submission" in result.err


def test_bad_today_is_a_usage_error(cli, demo_copy: Path) -> None:
    assert cli("plan", "--today", "yesterday", demo_copy).code == 64


def test_large_generated_export(cli, demo_copy: Path) -> None:
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    generate_export(export, recipients=3000, seed=7, test_persons=3)
    result = cli("plan", "--format", "json", demo_copy)
    (s,) = json.loads(result.out)["submissions"]
    assert s["summary"]["recipients"] == 2997  # 3 of the 3000 are test persons
    assert s["summary"]["testPersonsExcluded"] == "<5"


@pytest.mark.parametrize(
    ("case", "mangle"),
    [
        ("truncated", lambda t: t[: len(t) // 2]),
        (
            "doctype",
            lambda t: t.replace("<IplosExport", "<!DOCTYPE x [<!ENTITY a 'b'>]>\n<IplosExport", 1),
        ),
        ("wrong-namespace", lambda t: t.replace("urn:iplosctl:export:v1", "urn:other", 1)),
        ("empty", lambda t: ""),
    ],
)
def test_bad_export_is_one_error_and_nothing_written(
    cli, demo_copy: Path, tmp_path: Path, case, mangle
) -> None:  # type: ignore[no-untyped-def]
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    export.write_text(mangle(export.read_text()))
    out = tmp_path / "plan.json"
    result = cli("plan", "--out", out, demo_copy)
    assert result.code == 1, result.all
    assert "Traceback" not in result.all
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert errors[0].startswith(f"error: {export}:"), errors[0]
    assert not out.exists()
    assert not demo_copy.with_name("demo-2023.lock.yaml").exists()


def test_plan_from_a_csv_export(cli, demo_copy: Path) -> None:
    """The csv source through the whole plan: the same rules, summary and parts."""
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.csv"
    export.write_text(
        "journalnr;fnr;navn;tjeneste;fra;til;timer;orgnr\n"
        "r1;05903813050;;15;01.02.2023;;3,5;310000027\n"
        "r1;05903813050;;6;01.02.2023;;;\n"
        "r2;04888724112;Donald Duck;21;10.05.2022;;;310000035\n"
        "r3;21875604802;;12;01.03.2023;;;\n",
        encoding="utf-8",
    )
    text = demo_copy.read_text()
    text = text.replace(
        "    plugin: xml\n    path: ../examples/exports/demo-2023.xml\n"
        "    format: iplos-export-v1\n",
        "    plugin: csv\n    path: ../examples/exports/demo-2023.csv\n    options:\n"
        '      municipality: "9999"\n      reportingYear: 2023\n      epjSystem: DemoEPJ\n'
        "      epjVersion: 4.2.0\n      dateFormat: '%d.%m.%Y'\n"
        "      columns: {localId: journalnr, personId: fnr, name: navn, code: tjeneste,"
        " from: fra, to: til, hoursPerWeek: timer, orgNumber: orgnr}\n",
    )
    demo_copy.write_text(text)
    result = cli("plan", "--format", "json", demo_copy)
    (s,) = json.loads(result.out)["submissions"]
    assert s["action"] == "blocked"  # code 12 is obsolete
    rules = {f["rule"]: f for f in s["findings"]}
    assert rules["housing-code"]["records"] == [{"record": 3, "line": 5}]  # 1-based, like lines
    assert rules["test-person"]["count"] == 1
    assert s["summary"]["recipients"] == "<5"


def test_the_rendered_example_in_examples_is_current(
    cli, demo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/plan-comment.md shows a new user the PR comment; regenerate it when this fails
    (on a checkout without the demo's lockfile):
    iplosctl plan --format markdown manifests/ > examples/plan-comment.md"""
    monkeypatch.chdir(demo_copy.parent.parent)  # a fresh copy: no lockfile, same paths
    result = cli("plan", "--format", "markdown", "manifests/")
    expected = (REPO / "examples" / "plan-comment.md").read_text()
    assert result.out == expected


def test_message_size_warns_then_blocks_and_the_manifest_raises_the_limit(
    cli, demo_copy: Path
) -> None:
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    generate_export(export, recipients=2500, seed=5)  # KPR_IPL over 1 MB
    (s,) = json.loads(cli("plan", "--format", "json", demo_copy).out)["submissions"]
    sizes = [f for f in s["findings"] if f["rule"] == "message-size"]
    assert [f["severity"] for f in sizes] == ["warning"] and "KPR_IPL" in sizes[0]["message"]
    text = demo_copy.read_text()
    # over the limit plain, under it compressed: sent compressed, and the plan says so
    demo_copy.write_text(text + "  messageSizeLimitBytes: 500000\n")
    (s,) = json.loads(cli("plan", "--format", "json", demo_copy).out)["submissions"]
    assert s["action"] == "submit"
    ipl = next(p for p in s["parts"] if p["type"] == "KPR_IPL")
    assert ipl["compression"] == "gzip" and ipl["sentBytes"] < 500_000 < ipl["sizeBytes"]
    (size,) = [f for f in s["findings"] if f["rule"] == "message-size"]
    assert size["severity"] == "warning" and "KPR_IPL" in size["message"]
    assert "compressed to" in size["message"] and "accepts compressed" in size["message"]
    assert "compressed (gzip) to" in cli("plan", demo_copy).out
    # over the limit even compressed: blocked, naming the size that would be sent
    demo_copy.write_text(text + "  messageSizeLimitBytes: 50000\n")
    (s,) = json.loads(cli("plan", "--format", "json", demo_copy).out)["submissions"]
    assert s["action"] == "blocked"
    assert any("over the 50,000 byte limit" in f["message"] for f in s["findings"])
    demo_copy.write_text(text + "  messageSizeLimitBytes: 5000000\n")
    (s,) = json.loads(cli("plan", "--format", "json", demo_copy).out)["submissions"]
    assert s["action"] == "submit"
    assert not [f for f in s["findings"] if f["rule"] == "message-size"]
