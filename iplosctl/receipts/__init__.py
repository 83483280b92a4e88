"""receipts: record what the register answered, then take it off the queue.

The letter says: do not send again before the receipt is checked. So, per
submission and under its lock (DESIGN.md §4), this reads the municipality's
own `{serviceHerId}_async` queue (AppRecs, DOMAIN.md §4, §5.6) and its
`_error` queue (transport errors, §5.7) and, for every message:

1. decides what it means for the lockfile: a receipt for a part, an error
   for a part, a duplicate of something already recorded, or something to
   quarantine (matches no part, fails decryption or the signature check,
   does not parse, contradicts what is recorded);
2. makes that durable: the lockfile is written atomically, or the message
   is written to the quarantine folder (outside the lockfile, listed by
   `status`);
3. only then accepts the AMQP delivery. If step 2 fails the delivery is
   released and stays on the queue; if the process dies between 2 and 3 the
   broker delivers it again and step 1 sees a duplicate (§5.8: receivers must
   be idempotent).

Several submissions of one municipality share its queues (e.g. 2021 and 2023
manifests with the same service HER-id), so a receipt that matches no part
of this lockfile may belong to another one. It is quarantined, never
dropped, and every run first adopts quarantined receipts that match its own
lockfile: the other submission's next `receipts` run records it.

The package, one job per module: `run` (the loop above, under the lock), `decide`
(what a message means), `effects` (making it durable), `quarantine` (the folder),
`render` (the lines the CLI prints) and `model` (results and the shared words).
Import from the package: `from iplosctl.receipts import collect_receipts`.
"""

from __future__ import annotations

from iplosctl.receipts.effects import Quarantine as _Quarantine
from iplosctl.receipts.effects import Record as _Record
from iplosctl.receipts.model import (
    CONFLICT,
    ERROR_CONDITION,
    ERROR_CONDITION_DATA,
    ERROR_DESCRIPTION,
    FAILED,
    MALFORMED,
    MISMATCHED,
    ORIGINAL_MESSAGE_ID,
    UNEXPECTED,
    UNMATCHED,
    UNVERIFIED,
    WAITING,
    QuarantinedReceipt,
    ReceiptsResult,
    RecordedPart,
)
from iplosctl.receipts.quarantine import QUARANTINE_VERSION, list_quarantine, quarantine_dir
from iplosctl.receipts.quarantine import write_quarantine as _write_quarantine
from iplosctl.receipts.render import detail_lines, summary_line
from iplosctl.receipts.run import (
    CRASH_AT_ENV,
    MIN_RECEIVE_TIMEOUT,
    RECEIVE_TIMEOUT,
    collect_receipts,
)

__all__ = [
    "CONFLICT",
    "CRASH_AT_ENV",
    "ERROR_CONDITION",
    "ERROR_CONDITION_DATA",
    "ERROR_DESCRIPTION",
    "FAILED",
    "MALFORMED",
    "MIN_RECEIVE_TIMEOUT",
    "MISMATCHED",
    "ORIGINAL_MESSAGE_ID",
    "QUARANTINE_VERSION",
    "RECEIVE_TIMEOUT",
    "UNEXPECTED",
    "UNMATCHED",
    "UNVERIFIED",
    "WAITING",
    "QuarantinedReceipt",
    "ReceiptsResult",
    "RecordedPart",
    "_Quarantine",
    "_Record",
    "_write_quarantine",
    "collect_receipts",
    "detail_lines",
    "list_quarantine",
    "quarantine_dir",
    "summary_line",
]
