"""Writing a file so that a crash leaves the old version or the new one, never half.

Temp file in the same folder, fsync, `os.replace`, then fsync of the folder so
the rename itself survives a power cut. Lockfiles, saved plans, quarantined
receipts, support bundles, manifests, generated exports and the outbox all
write through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry lives in the directory's own blocks."""
    with contextlib.suppress(OSError):  # some filesystems (e.g. SMB mounts) refuse this
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without an exception.

    `durable=False` skips both fsyncs, for caches only: a cache file a power cut tore is
    read as a miss, while fsyncing each of a fleet's 712 cache files cost seconds.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; most of these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(directory)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data`, all or nothing (`durable`: see `atomic_file`)."""
    with atomic_file(path, mode=mode, durable=durable) as fh:
        fh.write(data)
