"""receipts.model: what a `receipts` run reports, and the words code, `status` and tests share.

Kept apart from the run loop so `status`, the support bundle and the CLI can name a
result, a quarantine kind or a waiting state without importing the reading machinery.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from iplosctl import lockfile

#: part states that still wait for an answer from the register
WAITING = frozenset({"journaled", "sent"})
#: part states after which the register will not process the attempt
FAILED = frozenset({"rejected", "transport-error"})

# Quarantine kinds: stable values for code, `status` and tests.
UNMATCHED = "unmatched"  #: matches no part of the lockfile (yet)
UNVERIFIED = "unverified"  #: decryption or signature check failed
MALFORMED = "malformed"  #: not an AppRec we can read
CONFLICT = "conflict"  #: contradicts what the lockfile already records
UNEXPECTED = "unexpected"  #: readable, but not something a register sends
#: an error-queue message whose fromHerId, toHerId or subject is not the register's, ours
#: and the part's: unsigned by NHN's design, so this is all that tells it came from KPR
MISMATCHED = "mismatched"

# Error-queue application properties (DOMAIN.md §5.7).
ORIGINAL_MESSAGE_ID = "originalMessageId"
ERROR_CONDITION = "errorCondition"
ERROR_DESCRIPTION = "errorDescription"
ERROR_CONDITION_DATA = "errorConditionData"


def utc_now() -> dt.datetime:
    """Now, to the second: the lockfile and the quarantine record no finer."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso_z(moment: dt.datetime) -> str:
    """ISO UTC with `Z`, the form every time in the lockfile and quarantine takes."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- results ------------------------------------------------------------------


class RecordedPart(NamedTuple):
    """A part whose state this run changed: a receipt or a transport error recorded."""

    type: str
    msg_id: str
    state: str
    #: AppRec error codes (V), or the error-queue condition
    codes: tuple[str, ...]
    #: the AppRec errors as recorded (codes; DN and OT already scrubbed)
    errors: tuple[lockfile.ReceiptError, ...] = ()


@dataclass
class ReceiptsResult:
    """What one `receipts` run did for one submission; the CLI renders it."""

    name: str
    lockfile_path: Path
    #: the lockfile's serial after the run (None without a lockfile)
    serial: int | None = None
    recorded: list[RecordedPart] = field(default_factory=list)
    transport_errors: list[RecordedPart] = field(default_factory=list)
    #: deliveries that changed nothing (already recorded) and were accepted
    duplicates: int = 0
    #: quarantine files (`.p7m`) written by this run
    quarantined: list[Path] = field(default_factory=list)
    #: parts of the last attempt still `journaled` or `sent` after the run
    outstanding: int = 0
    #: set when there was nothing to read for (no lockfile, nothing sent)
    nothing_to_do: str = ""
    #: the last attempt's number and its parts that the register refused or that the
    #: error queue reported (`rejected`, `transport-error`), after the run: the CLI's
    #: exit code (issue 13: a rejection must not leave the hourly CI job green)
    attempt: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: parts of the last attempt answered `accepted-with-errors`
    with_errors: list[str] = field(default_factory=list)
    #: `unverified` quarantine entries that verified this time and were recorded
    reexamined: int = 0
    #: one line per message the transport refused without reading it (too large)
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QuarantinedReceipt:
    """One quarantined message, as `status` lists it. `reason` holds no personal data."""

    path: Path  #: the message body as received (`.p7m`)
    metadata_path: Path  #: the `.json` beside it
    quarantined_at: str
    queue: str
    kind: str
    reason: str
    message_id: str | None = None
    original_msg_id: str | None = None


# --- public API -----------------------------------------------------------------
