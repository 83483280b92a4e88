"""Ctrl-C during apply, then `apply plan.json` again (issue 13.5): the saved plan's attempt,
left `journaled`, is recovered with the same message ids instead of refused as stale.

A real process gets a real SIGINT at a pause point (IPLOSCTL_TEST_PAUSE_AT), against the
embedded sandbox register (the real AMQP transport and CMS, no shared broker needed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.errors import EXIT_INTERRUPTED
from tests.conftest import REPO

TODAY = "2024-01-05"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IPLOSCTL_STATE_DIR": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "NO_COLOR": "1",
    }


def interrupted_apply(args: list[str], env: dict[str, str], at: str) -> tuple[int, str]:
    """Run `iplosctl ARGS`, send SIGINT once it reports `paused at AT`, return (code, stderr)."""
    exe = str(Path(sys.executable).with_name("iplosctl"))
    proc = subprocess.Popen(
        [exe, *args],
        env={**env, "IPLOSCTL_TEST_PAUSE_AT": at},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip() == f"paused at {at}":
            proc.send_signal(signal.SIGINT)
            break
    else:
        proc.wait(30)
        raise AssertionError("never paused: " + "".join(seen))
    _out, rest = proc.communicate(timeout=60)
    return proc.returncode, "".join(seen) + rest


@pytest.mark.parametrize("at", ["journaled", "accepted"])
def test_sigint_then_apply_the_saved_plan_recovers_with_the_same_msgids(
    cli,
    demo_copy: Path,
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    at: str,
) -> None:
    for key in ("IPLOSCTL_STATE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, env[key])
    saved = tmp_path / "plan.json"
    assert cli("plan", "--out", saved, "--today", TODAY, demo_copy).code == 0
    reviewed = [p["msgId"] for p in json.loads(saved.read_text())["submissions"][0]["parts"]]

    code, err = interrupted_apply(["apply", "--today", TODAY, str(saved)], env, at)
    assert code == EXIT_INTERRUPTED, err
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "attempt 1 is journaled" in lines[0] and f"iplosctl apply {saved}" in lines[0]
    lock = lf.load(demo_copy.with_name("demo-2023.lock.yaml"))
    assert lock is not None and lock.attempts[0].states == {"journaled"}

    plan = json.loads(cli("plan", "--format", "json", "--today", TODAY, demo_copy).out)
    assert plan["submissions"][0]["action"] == "recover"
    again = cli("apply", "--today", TODAY, saved)
    assert again.code == 0, again.all
    assert "stale" not in again.all
    lock = lf.load(demo_copy.with_name("demo-2023.lock.yaml"))
    assert lock is not None and len(lock.attempts) == 1
    assert lock.attempts[0].states == {"sent"}
    assert [p.msg_id for p in lock.attempts[0].parts] == reviewed
    assert cli("receipts", "--wait", "30s", demo_copy).code == 0
    assert cli("apply", "--today", TODAY, saved).code == 1  # now it is stale: sent, waiting


def test_sigint_before_journaling_says_the_lockfile_is_unchanged(
    demo_copy: Path, env: dict[str, str]
) -> None:
    code, err = interrupted_apply(
        ["apply", "--auto-approve", "--today", TODAY, str(demo_copy)], env, "prepared"
    )
    assert code == EXIT_INTERRUPTED, err
    assert "is unchanged: nothing was journaled, nothing was sent" in err
    assert not demo_copy.with_name("demo-2023.lock.yaml").exists()


def test_a_saved_plan_for_another_attempt_is_still_stale(
    cli, demo_copy: Path, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the very attempt the saved plan describes is recovered from it."""
    for key in ("IPLOSCTL_STATE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, env[key])
    saved = tmp_path / "plan.json"
    assert cli("plan", "--out", saved, "--today", TODAY, demo_copy).code == 0
    code, _err = interrupted_apply(
        ["apply", "--auto-approve", "--today", TODAY, str(demo_copy)], env, "journaled"
    )
    assert code == EXIT_INTERRUPTED
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    export.write_text(export.read_text().replace('<Service code="15">', '<Service code="1">', 1))
    stale = cli("apply", "--today", TODAY, saved)
    assert stale.code == 1 and "plan is stale" in stale.err
