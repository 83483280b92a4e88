"""sandbox.queues: the peer's queues, named as RabbitMQ names them and kept on disk.

Which queue an AMQP address names (DOMAIN.md §5.2: `/amq/queue/Q`, `/exchange/NS/Q`,
`/queue/Q` or a bare `Q`), and `QueueStore`: FIFO queues whose every message is a file
under `STATE/queues/<queue>/` (written to a temp file, then renamed) with its due time in
the name, loaded again at start. The AMQP side that delivers them is `peer.py`.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}")
_FILE_NAME = re.compile(r"(\d{16})-(\d{15})\.amqp")


def queue_from_target(address: str | None) -> str | None:
    """The queue a sender link (or a message's `to`) names, or None if not one we serve."""
    if not address:
        return None
    parts = address.strip("/").split("/")
    if address.startswith("/amq/queue/") and len(parts) == 3:
        name = parts[2]
    elif address.startswith("/exchange/") and len(parts) == 3:
        name = parts[2]  # /exchange/NAMESPACE/QUEUE: routed by key = queue name (HNM dialect)
    elif address.startswith("/queue/") and len(parts) == 2:
        name = parts[1]
    elif "/" not in address:
        name = address
    else:
        return None
    return name if _QUEUE_NAME.fullmatch(name) else None


def queue_from_source(address: str | None) -> str | None:
    """The queue a receiver link reads, or None (no exchanges to read from)."""
    if address and address.startswith("/exchange/"):
        return None
    return queue_from_target(address)


# --- the queues ------------------------------------------------------------------------------


@dataclass(eq=False)
class Entry:
    """One queued message; `path` is its file when the store has a folder."""

    queue: str
    seq: int
    #: epoch seconds before which it is not delivered (0: at once)
    due: float
    data: bytes
    path: Path | None = field(default=None, repr=False)


class QueueStore:
    """Named FIFO queues of encoded AMQP messages, mirrored to files when given a folder.

    Not thread-safe: only the peer's thread uses it.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._ready: dict[str, list[Entry]] = {}
        self._seq = 0
        if directory is not None:
            self._load(directory)

    def _load(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for queue_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
            if not _QUEUE_NAME.fullmatch(queue_dir.name):
                continue
            for path in sorted(queue_dir.iterdir()):
                match = _FILE_NAME.fullmatch(path.name)
                if match is None:
                    if path.name.endswith(".tmp"):
                        path.unlink(missing_ok=True)  # a write interrupted before its rename
                    continue
                seq, due_ms = int(match.group(1)), int(match.group(2))
                entry = Entry(queue_dir.name, seq, due_ms / 1000, path.read_bytes(), path)
                self._ready.setdefault(entry.queue, []).append(entry)
                self._seq = max(self._seq, seq)
        for entries in self._ready.values():
            entries.sort(key=lambda e: e.seq)

    def put(self, queue: str, data: bytes, due: float = 0.0) -> None:
        """Append a message; on disk before this returns."""
        self._seq += 1
        entry = Entry(queue, self._seq, due, data)
        if self.directory is not None:
            folder = self.directory / queue
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{entry.seq:016d}-{round(due * 1000):015d}.amqp"
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # a crash leaves the old state or the new, never half a file
            entry.path = path
        self._ready.setdefault(queue, []).append(entry)

    def take(self, queue: str, now: float) -> Entry | None:
        """The oldest message of `queue` that is due, removed from the ready list."""
        entries = self._ready.get(queue, [])
        for i, entry in enumerate(entries):
            if entry.due <= now:
                return entries.pop(i)
        return None

    def requeue(self, entry: Entry) -> None:
        """Put a delivered-but-unsettled message back in its place."""
        bisect.insort(self._ready.setdefault(entry.queue, []), entry, key=lambda e: e.seq)

    def done(self, entry: Entry) -> None:
        """Forget a settled message for good."""
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)

    def depth(self, queue: str) -> int:
        """Messages waiting (due or not), not counting those in flight."""
        return len(self._ready.get(queue, []))

    def next_due(self) -> float | None:
        dues = [e.due for entries in self._ready.values() for e in entries if e.due]
        return min(dues) if dues else None
