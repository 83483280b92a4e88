"""receipts.effects: what a message means, as a change to make durable before accepting it.

Every decision (`receipts.decide`) returns one effect. The run loop calls `commit`
(write the lockfile, or the quarantine entry) and only then accepts the delivery;
`report` adds it to the result afterwards, so a bookkeeping bug cannot lose a message
that is already durable.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from iplosctl import lockfile
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.plugins import IncomingMessage
from iplosctl.receipts.model import QuarantinedReceipt, ReceiptsResult, RecordedPart
from iplosctl.receipts.quarantine import quarantine_dir, write_quarantine


class RunState(Protocol):
    """The part of a run an effect changes: its lockfile, where it lives, and the clock."""

    manifest: Manifest
    lock_path: Path
    lock: lockfile.Lockfile

    def now(self) -> dt.datetime: ...


class Effect(Protocol):
    """What a message means, made durable by `commit` before the delivery is accepted."""

    def commit(self, run: RunState) -> None: ...

    def report(self, result: ReceiptsResult) -> None: ...


@dataclass
class Record:
    """A new lockfile in which one part moved on."""

    lock: lockfile.Lockfile
    part: RecordedPart
    transport_error: bool = False

    def commit(self, run: RunState) -> None:
        try:
            lockfile.save(run.lock_path, self.lock)
        except OSError as exc:
            raise IplosctlError(
                f"cannot write {run.lock_path} ({exc.strerror or type(exc).__name__}): the "
                "message stays on the queue; fix this, then run iplosctl receipts again"
            ) from None
        run.lock = self.lock

    def report(self, result: ReceiptsResult) -> None:
        (result.transport_errors if self.transport_error else result.recorded).append(self.part)


class Duplicate:
    """Already recorded: nothing to write, and the delivery can go."""

    def commit(self, run: RunState) -> None:
        pass

    def report(self, result: ReceiptsResult) -> None:
        result.duplicates += 1


@dataclass
class Quarantine:
    """Keep the message, outside the lockfile, with why it could not be recorded."""

    message: IncomingMessage
    kind: str
    reason: str
    original_msg_id: str | None = None
    written: Path | None = None

    def commit(self, run: RunState) -> None:
        try:
            self.written = write_quarantine(
                quarantine_dir(run.manifest), run.manifest.name, self, run.now()
            )
        except OSError as exc:
            raise IplosctlError(
                f"cannot write to the quarantine folder {quarantine_dir(run.manifest)} "
                f"({exc.strerror or type(exc).__name__}): the message stays on the queue; "
                "fix this, then run iplosctl receipts again"
            ) from None

    def report(self, result: ReceiptsResult) -> None:
        if self.written is not None:
            result.quarantined.append(self.written)


class StoredDelivery:
    """A quarantined message offered again: accepting it removes it from quarantine."""

    def __init__(self, entry: QuarantinedReceipt, message: IncomingMessage) -> None:
        self.entry = entry
        self.message = message

    def accept(self) -> None:
        self.entry.metadata_path.unlink(missing_ok=True)  # the marker first: body alone is inert
        self.entry.path.unlink(missing_ok=True)

    def release(self) -> None:
        pass
