"""apply's confirmation on a real terminal (issue 13.1): a pty, as a person would see it.

The progress bar used to be drawn before the question, and rich redrew it over
"Send …? [y/N]": the tool looked hung and the user answered blind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

TODAY = "2024-01-05"


def _spawn(demo_copy: Path, tmp_path: Path) -> pexpect.spawn:
    exe = str(Path(sys.executable).with_name("iplosctl"))
    env = {
        **os.environ,
        "IPLOSCTL_STATE_DIR": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "NO_COLOR": "1",
        "TERM": "xterm",
        "COLUMNS": "120",
    }
    return pexpect.spawn(
        exe,
        ["apply", "--today", TODAY, str(demo_copy)],
        env=env,
        cwd=str(tmp_path),
        encoding="utf-8",
        dimensions=(40, 120),
        timeout=60,
    )


@pytest.mark.parametrize("answer", ["n", ""])
def test_the_question_stays_readable_and_no_sends_nothing(
    demo_copy: Path, tmp_path: Path, answer: str
) -> None:
    child = _spawn(demo_copy, tmp_path)
    try:
        child.expect_exact("Send demo-2023 (submit, attempt 1)? [y/N]: ")
        shown = child.before
        # the plan was shown above the question, and nothing was drawn over it ...
        assert "demo-2023" in shown and "submit" in shown
        assert "sending" not in shown and "\x1b[" not in shown
        # ... nor after it, while the question waits for its answer
        child.expect(pexpect.TIMEOUT, timeout=1.5)
        assert child.before == ""
        child.sendline(answer)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert "apply cancelled; nothing was sent" in child.before
    assert not demo_copy.with_name("demo-2023.lock.yaml").exists()
    assert not (tmp_path / "state" / "sandbox" / "queues").exists() or not any(
        (tmp_path / "state" / "sandbox" / "queues").rglob("*")
    )


def test_yes_sends_after_the_question(demo_copy: Path, tmp_path: Path) -> None:
    child = _spawn(demo_copy, tmp_path)
    try:
        child.expect_exact("? [y/N]: ")
        child.sendline("y")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert "sent KPR_IPL msgId" in child.before and "sent KPR_IDE msgId" in child.before
