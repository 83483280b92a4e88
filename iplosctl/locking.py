"""One writer per submission at a time: a lock beside its lockfile.

`<name>.lock.yaml.lock` is an OS-level lock (filelock), so a holder that dies
releases it with its process. Beside it, `<name>.lock.yaml.holder` says who
holds it (id, pid, host, time, command) for the "lock held by …" message;
`iplosctl lock force-unlock ID` removes a stale lock (e.g. on a network
file system where OS locks outlive their holders). Different submissions
lock different files, so fifty municipalities can apply in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from iplosctl.errors import IplosctlError
from iplosctl.lockfile import utc_now


class LockHeldError(IplosctlError):
    """Another apply or receipts run holds this submission's lock."""


def _paths(lockfile_path: Path) -> tuple[Path, Path]:
    return (
        lockfile_path.with_name(lockfile_path.name + ".lock"),
        lockfile_path.with_name(lockfile_path.name + ".holder"),
    )


def holder(lockfile_path: Path) -> dict[str, str] | None:
    """Who holds the lock, as its holder file says (None if nobody wrote one)."""
    try:
        data: dict[str, str] = json.loads(_paths(lockfile_path)[1].read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def submission_lock(lockfile_path: Path, command: str, *, timeout: float = 0) -> Iterator[str]:
    """Hold the submission's lock for the block; LockHeldError at once if taken."""
    lock_path, holder_path = _paths(lockfile_path)
    lock = FileLock(lock_path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        who = holder(lockfile_path) or {}
        raise LockHeldError(
            f"lock held by {who.get('command', 'another iplosctl')} (id {who.get('id', '?')}, "
            f"pid {who.get('pid', '?')} on {who.get('host', '?')} since {who.get('since', '?')}) "
            f"for {lockfile_path.name}: wait for it, or if that process is dead run "
            f"`iplosctl lock force-unlock {who.get('id', 'ID')} {lockfile_path}`"
        ) from None
    lock_id = uuid.uuid4().hex[:12]
    try:
        holder_path.write_text(
            json.dumps(
                {
                    "id": lock_id,
                    "pid": str(os.getpid()),
                    "host": socket.gethostname(),
                    "since": utc_now(),
                    "command": command,
                }
            ),
            encoding="utf-8",
        )
        yield lock_id
    finally:
        holder_path.unlink(missing_ok=True)
        lock.release()


def force_unlock(lockfile_path: Path, lock_id: str) -> None:
    """Remove a dead holder's lock, only if `lock_id` matches what the holder file says."""
    lock_path, holder_path = _paths(lockfile_path)
    who = holder(lockfile_path)
    if who is None:
        raise IplosctlError(f"{lockfile_path.name} is not locked")
    if who.get("id") != lock_id:
        raise IplosctlError(
            f"the lock of {lockfile_path.name} has id {who.get('id')}, not "
            f"{lock_id}: nothing removed"
        )
    holder_path.unlink(missing_ok=True)
    lock_path.unlink(missing_ok=True)
