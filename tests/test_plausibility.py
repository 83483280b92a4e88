"""Plausibility warnings (issue 13, item 12): a count that jumps since the accepted attempt
or since last year's submission is flagged, with counts only, and never blocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from iplosctl.plausibility import plausibility_findings
from iplosctl.sandbox.generate import generate_export
from tests.conftest import DEMO_MANIFEST


def test_a_jump_in_recipients_and_a_service_code_is_a_warning() -> None:
    before = {"recipients": 198, "perServiceCode": {"15": 120, "21": 40, "6": "<5"}}
    now = {"recipients": 29_997, "perServiceCode": {"15": 121, "21": 12, "6": 30}}
    found = plausibility_findings(now, before, "the accepted attempt 1")
    messages = [f.message for f in found]
    assert all(f.rule == "plausibility" and f.severity == "warning" for f in found)
    assert messages[0].startswith("recipients changed from 198 to 29,997 (+15050 %)")
    assert any(m.startswith("users of service code 21 changed from 40 to 12") for m in messages)
    # 120 → 121 is noise; '<5' → 30 cannot be compared (suppressed on purpose).
    assert not any("code 15" in m or "code 6 " in m for m in messages)


@pytest.mark.parametrize(
    ("before", "now"),
    [(100, 140), (10, 25), ("<5", 40), (100, 100)],
)
def test_small_or_suppressed_changes_are_not_flagged(before: object, now: object) -> None:
    assert plausibility_findings({"recipients": now}, {"recipients": before}, "x") == []


def _manifest(folder: Path, name: str, year: int, export: Path) -> Path:
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    text = text.replace("name: demo-2023", f"name: {name}")
    text = text.replace("reportingYear: 2023", f"reportingYear: {year}")
    text = text.replace("../examples/exports/demo-2023.xml", str(export))
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def accepted(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A demo submission of 40 recipients, applied and accepted by the embedded sandbox."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    export = tmp_path / "export.xml"
    generate_export(export, recipients=40, seed=1)
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = _manifest(folder, "demo-2023", 2023, export)
    assert cli("apply", "--auto-approve", manifest).code == 0
    assert cli("receipts", manifest, "--wait", "30s").code == 0
    return manifest


def test_a_correction_that_jumps_is_flagged(cli, accepted: Path) -> None:
    export = accepted.parent.parent / "export.xml"
    generate_export(export, recipients=400, seed=2)
    result = cli("plan", "--format", "json", accepted)
    (submission,) = json.loads(result.out)["submissions"]
    assert submission["action"] == "correct"
    found = [f for f in submission["findings"] if f["rule"] == "plausibility"]
    assert found and found[0]["message"].startswith("recipients changed from 40 to 400")
    assert "since the accepted attempt 1" in found[0]["message"]
    assert result.code == 0  # a warning: real changes happen


def test_last_years_submission_beside_the_manifest_is_compared(
    cli, accepted: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "next"
    folder.mkdir()
    # Last year's submission: the accepted one, as the 2022 series of this municipality.
    last_year = _manifest(folder, "demo-2022", 2022, tmp_path / "export.xml")
    shutil.copy(accepted.with_name("demo-2023.lock.yaml"), last_year.with_suffix(".lock.yaml"))
    export = tmp_path / "big.xml"
    generate_export(export, recipients=300, seed=3)
    this_year = _manifest(folder, "demo-2023", 2023, export)
    result = cli("plan", "--format", "json", this_year)
    (submission,) = json.loads(result.out)["submissions"]
    messages = [f["message"] for f in submission["findings"] if f["rule"] == "plausibility"]
    assert any(
        m.startswith("recipients changed from 40 to 300") and "the 2022 submission demo-2022" in m
        for m in messages
    ), messages


def test_a_resubmit_of_the_rejected_payload_is_a_warning(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, item 12: resubmit was offered with an unchanged payload, no word said."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    export = tmp_path / "export.xml"
    generate_export(export, recipients=30, seed=4)
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = _manifest(folder, "demo-2023", 2023, export)
    monkeypatch.setenv("IPLOSCTL_SANDBOX_BEHAVIOUR", "reject-all")
    assert cli("apply", "--auto-approve", manifest).code == 0
    cli("receipts", manifest, "--wait", "30s")  # the register rejects every part
    monkeypatch.delenv("IPLOSCTL_SANDBOX_BEHAVIOUR")

    def resubmit_findings() -> list[dict[str, str]]:
        (s,) = json.loads(cli("plan", "--format", "json", manifest).out)["submissions"]
        assert s["action"] == "resubmit"
        return [f for f in s["findings"] if f["rule"] == "resubmit-unchanged"]

    (warned,) = resubmit_findings()
    assert warned["severity"] == "warning" and "payload is unchanged" in warned["message"]
    generate_export(export, recipients=31, seed=4)  # the export was fixed
    assert resubmit_findings() == []
