"""Dead ends and the decisions that lead out of them (issue 13.3), end to end through the
embedded sandbox register: the real CLI, lockfile, AMQP transport and AppRecs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, EXIT_WAITING
from iplosctl.sandbox.embedded import BEHAVIOUR_ENV
from tests.conftest import REPO

TODAY = "2024-01-05"


@pytest.fixture
def demo(demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_OPERATOR", "kari.driftsansvarlig")
    return demo_copy


def lock_of(manifest: Path) -> lf.Lockfile:
    lock = lf.load(manifest.with_name(manifest.stem + ".lock.yaml"))
    assert lock is not None
    return lock


def planned(cli, manifest: Path) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return json.loads(cli("plan", "--format", "json", "--today", TODAY, manifest).out)[
        "submissions"
    ][0]


def change_export(manifest: Path) -> None:
    export = manifest.parent.parent / "examples" / "exports" / "demo-2023.xml"
    export.write_text(export.read_text().replace('<Service code="15">', '<Service code="1">', 1))


def test_sent_and_never_answered_then_confirmed_by_register(
    cli, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BEHAVIOUR_ENV, "never-answer")
    assert cli("apply", "--auto-approve", "--today", TODAY, demo).code == EXIT_OK
    assert cli("receipts", "--wait", "1s", demo).code == EXIT_WAITING
    plan = planned(cli, demo)
    assert plan["action"] == "wait" and "attempt abandon" in plan["reason"]
    assert "--confirmed-by-register" in plan["reason"]
    first = [p.msg_id for p in lock_of(demo).attempts[0].parts]
    before = demo.with_name("demo-2023.lock.yaml").read_bytes()

    # "it never left" is refused: the broker accepted it, only KPR can say
    refused = cli("attempt", "abandon", demo, "--attempt", "1", "--never-sent", "--reason", "x")
    assert refused.code == EXIT_ERROR and "only KPR can say" in refused.err
    # a basis is required, and a reason
    assert cli("attempt", "abandon", demo, "--attempt", "1", "--reason", "x").code == EXIT_USAGE
    no_reason = cli(
        "attempt", "abandon", demo, "--attempt", "1", "--confirmed-by-register", "--reason", " "
    )
    assert no_reason.code == EXIT_USAGE
    wrong = cli(
        "attempt", "abandon", demo, "--attempt", "2", "--confirmed-by-register", "--reason", "x"
    )
    assert wrong.code == EXIT_ERROR and "not the last attempt" in wrong.err
    assert demo.with_name("demo-2023.lock.yaml").read_bytes() == before  # refusals change nothing

    done = cli(
        "attempt",
        "abandon",
        demo,
        "--attempt",
        "1",
        "--confirmed-by-register",
        "--reason",
        "KPR (ticket 4711) confirms neither part arrived",
    )
    assert done.code == EXIT_OK, done.all
    attempt = lock_of(demo).attempts[0]
    assert attempt.states == {"abandoned"}
    (decision,) = attempt.decisions
    assert (decision.by, decision.action, decision.basis) == (
        "kari.driftsansvarlig",
        "abandon",
        "confirmed-by-register",
    )
    assert decision.reason == "KPR (ticket 4711) confirms neither part arrived"
    assert decision.at.endswith("Z") and decision.parts == ["KPR_IPL", "KPR_IDE"]
    text = demo.with_name("demo-2023.lock.yaml").read_text()
    assert "decisions:" in text and "by: kari.driftsansvarlig" in text

    # the way out: a new attempt with new message ids, accepted this time
    plan = planned(cli, demo)
    assert plan["action"] == "resubmit" and plan["attempt"] == 2
    assert "abandoned (confirmed-by-register, by kari.driftsansvarlig" in plan["reason"]
    assert not {p["msgId"] for p in plan["parts"]} & set(first)
    assert cli("receipts", demo).code == EXIT_OK  # an abandoned attempt is nothing to fail on
    monkeypatch.setenv(BEHAVIOUR_ENV, "normal")
    assert cli("apply", "--auto-approve", "--today", TODAY, demo, "--wait", "30s").code == 0
    lock = lock_of(demo)
    assert [a.number for a in lock.attempts] == [1, 2]
    assert lock.attempts[0].states == {"abandoned"} and lock.attempts[1].accepted
    assert planned(cli, demo)["action"] == "no-op"


def _crash_after_journaling(manifest: Path, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("iplosctl"))
    env = {**os.environ, "IPLOSCTL_TEST_CRASH_AT": "journaled"}
    args = [exe, "apply", "--auto-approve", "--today", TODAY, str(manifest)]
    crashed = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO, check=False)
    assert crashed.returncode < 0, crashed.stderr  # killed, as a power cut would


def test_journaled_then_the_export_changed_says_the_real_way_out(
    cli, demo: Path, tmp_path: Path
) -> None:
    _crash_after_journaling(demo, tmp_path)
    first = lock_of(demo).attempts[0]
    assert first.states == {"journaled"}
    change_export(demo)
    plan = planned(cli, demo)
    assert plan["action"] == "blocked"
    assert "fix the" not in plan["reason"]
    assert first.source_digest in plan["reason"]  # which export would recover it
    assert "iplosctl attempt abandon" in plan["reason"] and "--never-sent" in plan["reason"]
    status = cli("status", "--today", TODAY, demo)
    assert "fix the findings" not in status.out
    assert "--never-sent" in status.out and "restore the export" in status.out
    applied = cli("apply", "--auto-approve", "--today", TODAY, demo)
    assert applied.code == EXIT_ERROR and "attempt abandon" in applied.err

    done = cli(
        "attempt",
        "abandon",
        demo,
        "--attempt",
        "1",
        "--never-sent",
        "--by",
        "ola",
        "--reason",
        "apply was killed before connecting; export since replaced",
    )
    assert done.code == EXIT_OK, done.all
    plan = planned(cli, demo)
    assert plan["action"] == "resubmit" and plan["attempt"] == 2
    assert not {p["msgId"] for p in plan["parts"]} & {p.msg_id for p in first.parts}
    assert cli("apply", "--auto-approve", "--today", TODAY, demo, "--wait", "30s").code == 0
    lock = lock_of(demo)
    assert lock.attempts[0].states == {"abandoned"} and lock.attempts[1].accepted
    assert lock.attempts[0].decisions[0].by == "ola"


def test_a_late_receipt_for_an_abandoned_part_is_quarantined_not_recorded(
    cli, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KPR said it never arrived, then answers after all: the lockfile keeps the decision,
    and status shows the contradiction for a person to look at."""
    monkeypatch.setenv(BEHAVIOUR_ENV, "delay=3")
    assert cli("apply", "--auto-approve", "--today", TODAY, demo).code == EXIT_OK
    args = ["--attempt", "1", "--confirmed-by-register", "--reason", "lost, says KPR"]
    assert cli("attempt", "abandon", demo, *args).code == EXIT_OK
    quarantined = 0
    for _ in range(30):  # the held answers come once due; each run reads for about a second
        result = cli("receipts", demo)
        assert result.code == EXIT_OK, result.all
        quarantined += result.out.count("quarantined: ")
        if quarantined == 2:
            break
    assert quarantined == 2
    assert lock_of(demo).attempts[0].states == {"abandoned"}
    status = cli("status", "--today", TODAY, demo)
    assert "quarantined receipts: 2" in status.out and "abandoned" in status.out


def test_nothing_to_abandon_is_refused(cli, demo: Path) -> None:
    result = cli("attempt", "abandon", demo, "--attempt", "1", "--never-sent", "--reason", "x")
    assert result.code == EXIT_ERROR and "no attempt recorded" in result.err
    assert cli("apply", "--auto-approve", "--today", TODAY, demo, "--wait", "30s").code == 0
    result = cli("attempt", "abandon", demo, "--attempt", "1", "--never-sent", "--reason", "x")
    assert result.code == EXIT_ERROR and "nothing to abandon" in result.err


def test_a_lockfile_with_an_unknown_state_is_an_error(cli, demo: Path) -> None:
    assert cli("apply", "--auto-approve", "--today", TODAY, demo).code == EXIT_OK
    path = demo.with_name("demo-2023.lock.yaml")
    path.write_text(path.read_text().replace("state: sent", "state: lost", 1))
    result = cli("plan", "--today", TODAY, demo)
    assert result.code == EXIT_ERROR and "damaged lockfile" in result.err
