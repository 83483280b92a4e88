"""Plaintext payloads in flight: where `apply` keeps them, and what a crash leaves.

`apply` streams the export once more and writes each part's payload before it
is signed and encrypted; KPR_IDE holds every fødselsnummer. Those files live in
`<state folder>/inflight/<host>.<pid>.<token>/` (the state folder is `.iplosctl/`
or `IPLOSCTL_STATE_DIR`), never in a shared `/tmp`: the folders are 0700 and
the files 0600 from creation (`private_files`), the run removes its folder when
it ends, and a folder whose process is gone (SIGKILL, power loss) is removed by
the next `plan`, `apply` or `receipts` on this host. A folder of another host
(a state folder on a network share) is left to that host.

Why files and not memory: `/tmp` and the state folder are on the same disk
here, so moving them costs nothing measurable (`benchmarks/apply_throughput.py
--parts 3`, old and new interleaved: within the machine's noise, README
"Security and privacy"), while keeping 20 MB parts in memory would add their
size to apply's peak, and a crash then leaves nothing to clean either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from iplosctl import endpoint
from iplosctl.manifest import Manifest
from iplosctl.private_files import DIR_MODE, private_dir

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
_NAME = re.compile(r"^(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]+)\.(?P<token>[0-9a-f]+)$")


def inflight_root(manifest: Manifest | None = None) -> Path:
    """`<state folder>/inflight/` (the manifest's state folder: `endpoint.state_dir`): one
    folder per running apply."""
    return endpoint.state_dir(manifest) / "inflight"


def _host() -> str:
    return _UNSAFE.sub("_", socket.gethostname())[:64] or "localhost"


@contextlib.contextmanager
def payload_dir(manifest: Manifest | None = None) -> Iterator[Path]:
    """A private folder for this run's payloads, removed when the block ends (any way but
    a kill, which the next start cleans up)."""
    root = private_dir(inflight_root(manifest))
    ignore = root / ".gitignore"
    if not ignore.exists():  # plaintext payloads must never be committed by accident
        with contextlib.suppress(OSError):
            ignore.write_text("# written by iplosctl: plaintext payloads in flight\n*\n")
    folder = root / f"{_host()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
    os.mkdir(folder, DIR_MODE)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True


def remove_stale(manifest: Manifest | None = None) -> list[Path]:
    """Remove the payload folders of runs on this host whose process is gone; never fails
    (a start must not be stopped by a leftover it cannot remove, which it then names)."""
    root = inflight_root(manifest)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    host = _host()
    for folder in sorted(root.iterdir()):
        match = _NAME.match(folder.name)
        if match is None or match["host"] != host or not folder.is_dir():
            continue
        if _alive(int(match["pid"])):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            log.warning(
                "warning: cannot remove %s, plaintext payloads a crashed apply left: "
                "remove it by hand",
                folder,
            )
            continue
        log.warning("removed %s: plaintext payloads a crashed apply left behind", folder)
        removed.append(folder)
    return removed
