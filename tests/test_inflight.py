"""Plaintext payloads in flight: private from creation, gone after the run or the next start."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from iplosctl import inflight, lockfile
from tests.conftest import REPO

EXE = str(Path(sys.executable).with_name("iplosctl"))


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("next_start", ["plan", "receipts", "apply"])
def test_a_killed_apply_leaves_private_payloads_that_the_next_start_removes(
    demo_copy: Path, tmp_path: Path, next_start: str
) -> None:
    """Issue 12: apply wrote both payloads (KPR_IDE: every fødselsnummer) to
    /tmp/iplosctl-apply-*, and a SIGKILL left them there for good."""
    state, tmp = tmp_path / "state", tmp_path / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "IPLOSCTL_STATE_DIR": str(state),
        "TMPDIR": str(tmp),  # where tempfile would have put them
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "NO_COLOR": "1",
        "IPLOSCTL_TEST_CRASH_AT": "journaled",  # payloads written, attempt journaled, not sent
    }
    crashed = _run(["apply", "--auto-approve", str(demo_copy)], env, REPO)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert list(tmp.iterdir()) == []
    (left,) = [p for p in inflight_folders(state)]
    assert stat.S_IMODE((state / "inflight").stat().st_mode) == 0o700
    assert stat.S_IMODE(left.stat().st_mode) == 0o700
    payloads = sorted(p.name for p in left.iterdir())
    # each part plain and gzipped (the compressed form a large part is sent in)
    assert payloads == ["KPR_IDE.xml", "KPR_IDE.xml.gz", "KPR_IPL.xml", "KPR_IPL.xml.gz"]
    for name in payloads:
        assert stat.S_IMODE((left / name).stat().st_mode) == 0o600
    assert b"<PersonId>" in (left / "KPR_IDE.xml").read_bytes()  # what must not linger

    del env["IPLOSCTL_TEST_CRASH_AT"]
    args = {
        "plan": ["plan", str(demo_copy)],
        "receipts": ["receipts", str(demo_copy)],
        "apply": ["apply", "--auto-approve", str(demo_copy)],
    }[next_start]
    rerun = _run(args, env, REPO)
    assert rerun.returncode in (0, 2), rerun.stderr
    assert not left.exists()
    assert f"removed {left}" in rerun.stderr
    assert inflight_folders(state) == []
    if next_start == "apply":  # the recovery re-extracted, sent, and cleaned up after itself
        lock = lockfile.load(demo_copy.with_name("demo-2023.lock.yaml"))
        assert lock is not None and lock.attempts[0].states == {"sent"}
    assert list(tmp.iterdir()) == []


def inflight_folders(state: Path) -> list[Path]:
    root = state / "inflight"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def test_only_folders_of_dead_runs_on_this_host_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path))
    root = tmp_path / "inflight"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = inflight._host()
    folders = {
        "mine": root / f"{host}.{os.getpid()}.aa",
        "alive": root / f"{host}.1.bb",  # pid 1 is always running
        "dead": root / f"{host}.{dead.pid}.cc",
        "other host": root / f"elsewhere.{dead.pid}.dd",
        "not ours": root / "something-else",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "KPR_IDE.xml").write_text("x")
    assert inflight.remove_stale() == [folders["dead"]]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        f.name for k, f in folders.items() if k != "dead"
    )


def test_the_folder_goes_when_the_block_ends_even_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(RuntimeError), inflight.payload_dir() as folder:
        (folder / "KPR_IDE.xml").write_text("x")
        raise RuntimeError
    assert not folder.exists()
    assert (tmp_path / "state" / "inflight" / ".gitignore").read_text().endswith("*\n")
