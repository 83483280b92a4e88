"""Folders and files only this user may read, private from the moment they exist.

The state folder (`.iplosctl/`, or `IPLOSCTL_STATE_DIR`) holds test keys, the
quarantine (messages as received) and, while `apply` runs, the plaintext
payloads (KPR_IDE holds every fødselsnummer). Creating such a file 0644 and
chmodding it afterwards leaves a window in which another user can open it and
keep the descriptor; so folders are made 0700 and files opened 0600 by the
call that creates them (the umask can only narrow that), never widened later.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path` and every missing folder above it, each created 0700; existing ones are left
    as they are (a folder given by the user, such as a CI workspace, is not ours to change)."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a parallel run made it just now
            os.mkdir(folder, DIR_MODE)
    return path


def open_private(path: Path) -> BinaryIO:
    """A new file `path` opened for writing, 0600 from creation; refuses to follow a link
    or reuse a file that is already there (a stale one is removed by its owner first)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, FILE_MODE)
    return os.fdopen(fd, "wb")
