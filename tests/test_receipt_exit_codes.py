"""Exit codes of `receipts`, `receipts --wait` and `apply --wait` for every receipt outcome
(issue 13.2), through the embedded sandbox register: the real AMQP transport, CMS and
AppRecs, the register's own checks (an H-number → E53, accepted with errors) and its
unhappy behaviours (reject-all, error-queue, never-answer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.errors import EXIT_ERROR, EXIT_OK, EXIT_WAITING
from iplosctl.sandbox.embedded import BEHAVIOUR_ENV
from tests.conftest import planted_person_id

TODAY = "2024-01-05"


@pytest.fixture
def demo(demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return demo_copy


def _lock(manifest: Path) -> lf.Lockfile:
    lock = lf.load(manifest.with_name(manifest.stem + ".lock.yaml"))
    assert lock is not None
    return lock


def _use_an_h_number(manifest: Path) -> None:
    """One recipient with an H-number: the register accepts it with E53 (status 3)."""
    export = manifest.parent.parent / "examples" / "exports" / "demo-2023.xml"
    text = export.read_text()
    start = text.index("<PersonId>") + len("<PersonId>")
    export.write_text(text[:start] + planted_person_id("154520") + text[start + 11 :])


def _apply(cli, manifest: Path, *extra: str):  # type: ignore[no-untyped-def]
    return cli("apply", "--auto-approve", "--today", TODAY, *extra, manifest)


@pytest.mark.parametrize("command", ["receipts", "receipts --wait", "apply --wait"])
@pytest.mark.parametrize(
    ("outcome", "behaviour", "code", "states"),
    [
        ("accepted", "", EXIT_OK, {"accepted"}),
        ("accepted-with-errors", "", EXIT_OK, {"accepted", "accepted-with-errors"}),
        ("rejected", "reject-all", EXIT_ERROR, {"rejected"}),
        ("transport-error", "error-queue", EXIT_ERROR, {"transport-error"}),
        ("still waiting", "never-answer", EXIT_WAITING, {"sent"}),
    ],
)
def test_every_receipt_outcome_has_its_exit_code(
    cli,
    demo: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    outcome: str,
    behaviour: str,
    code: int,
    states: set[str],
) -> None:
    monkeypatch.setenv(BEHAVIOUR_ENV, behaviour or "normal")
    if outcome == "accepted-with-errors":
        _use_an_h_number(demo)
    wait = "2s" if outcome == "still waiting" else "30s"
    if command == "apply --wait":
        result = _apply(cli, demo, "--wait", wait)
    else:
        assert _apply(cli, demo).code == EXIT_OK
        args = ["receipts", demo] + (["--wait", wait] if "--wait" in command else [])
        result = cli(*args)
        if command == "receipts" and outcome != "still waiting":
            # one read may come before the register has answered: read until it has
            for _ in range(20):
                if not _lock(demo).attempts[-1].states & {"sent"}:
                    break
                result = cli(*args)
    if command == "receipts" and outcome == "still waiting":
        code = EXIT_OK  # without --wait, nothing outstanding is wrong yet
    assert result.code == code, result.all
    assert _lock(demo).attempts[-1].states == states
    if code == EXIT_ERROR:
        assert "attempt 1 failed (KPR_IPL " in result.err
        assert "then apply (resubmit)" in result.err
    if code == EXIT_WAITING:
        assert "still waiting for 2 receipt(s)" in result.err
    if outcome == "accepted-with-errors":
        assert "accepted with errors (KPR_IDE)" in result.err


def test_a_rejection_keeps_failing_later_runs_until_resubmitted(
    cli, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hourly CI job stays red while the submission failed, not only on the first run."""
    monkeypatch.setenv(BEHAVIOUR_ENV, "reject-all")
    assert _apply(cli, demo, "--wait", "30s").code == EXIT_ERROR
    again = cli("receipts", demo)
    assert again.code == EXIT_ERROR and "0 recorded" in again.out
    monkeypatch.setenv(BEHAVIOUR_ENV, "normal")
    plan = json.loads(cli("plan", "--format", "json", "--today", TODAY, demo).out)
    assert plan["submissions"][0]["action"] == "resubmit"
    assert _apply(cli, demo, "--wait", "30s").code == EXIT_OK
    assert cli("receipts", demo).code == EXIT_OK


def test_rejected_wins_over_still_waiting_across_submissions(
    cli, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two submissions, one rejected and one unanswered: 1, the one that needs action."""
    other = demo.with_name("demo-b-2023.yaml")
    other.write_text(demo.read_text().replace("name: demo-2023", "name: demo-b-2023"))
    monkeypatch.setenv(BEHAVIOUR_ENV, "reject-all")
    assert _apply(cli, demo, "--wait", "30s").code == EXIT_ERROR
    monkeypatch.setenv(BEHAVIOUR_ENV, "never-answer")
    assert _apply(cli, other).code == EXIT_OK
    result = cli("receipts", demo.parent, "--wait", "1s")
    assert result.code == EXIT_ERROR, result.all
    assert "still waiting for 2 receipt(s)" in result.err
