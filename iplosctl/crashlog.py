"""Crash reports for bugs (exit 3): one line on screen, details in a log file.

The log holds versions and the traceback's frames and exception type, but
not the exception's message or local values: those can quote input data,
and the log must be safe to attach to an issue (DESIGN.md §5).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import tempfile
import traceback
from pathlib import Path

from iplosctl import __version__


def log_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "iplosctl" / "crash"


def write_crash_log(exc: BaseException, argv: list[str]) -> Path:
    """Write a privacy-safe crash log and return its path."""
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [
        f"iplosctl {__version__}",
        f"python {platform.python_version()} on {platform.platform()}",
        f"time {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"command {argv[0] if argv else '(none)'}",
        f"exception {type(exc).__module__}.{type(exc).__qualname__}"
        " (message withheld: it may quote input data)",
        "traceback (most recent call last):",
        *(f"  {f.filename}:{f.lineno} in {f.name}" for f in frames),
    ]
    text = "\n".join(lines) + "\n"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for directory in (log_dir(), Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"iplosctl-crash-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    sys.stderr.write(text)
    return Path("(stderr)")
