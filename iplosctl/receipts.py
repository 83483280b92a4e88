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
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from iplosctl import endpoint, inflight, lockfile, privacy
from iplosctl.atomic import write_atomic
from iplosctl.certificates import checker_for, receipt_revocation_hook
from iplosctl.errors import IplosctlError, TransportError
from iplosctl.locking import submission_lock
from iplosctl.manifest import Manifest
from iplosctl.payload.apprec import AppRec, parse_apprec
from iplosctl.payload.cms import decrypt_then_verify
from iplosctl.payload.revocation import Checker
from iplosctl.plugins import Delivery, IncomingMessage
from iplosctl.private_files import private_dir

log = logging.getLogger(__name__)

#: part states that still wait for an answer from the register
WAITING = frozenset({"journaled", "sent"})
#: seconds a receive waits for the next message before the queue counts as empty
RECEIVE_TIMEOUT = 1.0
#: shorter reads could end before a remote broker has delivered what is queued
MIN_RECEIVE_TIMEOUT = 0.5
#: tests set it to a step name to SIGKILL the process there (crash-safety tests)
CRASH_AT_ENV = "IPLOSCTL_TEST_CRASH_AT"
QUARANTINE_VERSION = 1

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

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _norwegian_time() -> dt.tzinfo:
    try:
        return ZoneInfo("Europe/Oslo")
    except ZoneInfoNotFoundError:  # no tz database: an hour off beats failing
        return dt.UTC


def _gen_date_utc(moment: dt.datetime) -> str:
    """GenDate as ISO UTC `Z`. Without an offset it is taken as Norwegian local time,
    the convention of KITH messages (an inference: DOMAIN.md does not say)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_norwegian_time())
    return _iso(moment)


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


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


def collect_receipts(
    manifest: Manifest,
    *,
    wait_seconds: float = 0,
    poll_seconds: float = 2.0,
    lockfile_path: Path | None = None,
    now: Callable[[], dt.datetime] = _now,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    offline_revocation: bool = False,
) -> ReceiptsResult:
    """Read the municipality's queues once (or until every part is answered, at most
    `wait_seconds`) and record each receipt and transport error; see the module docstring.
    """
    path = lockfile_path or manifest.lockfile_path
    result = ReceiptsResult(name=manifest.name, lockfile_path=path)
    inflight.remove_stale(manifest)  # plaintext payloads a killed apply left: gone now
    with submission_lock(path, "iplosctl receipts"):
        lock = lockfile.load(path)
        if lock is None or not lock.attempts:
            result.nothing_to_do = (
                f"no attempt recorded in {path}: nothing was sent for {manifest.name}, "
                "so no receipt is expected (run iplosctl plan, then apply)"
            )
            result.serial = lock.serial if lock else None
            return result
        deadline = clock() + max(wait_seconds, 0)
        with endpoint.connect(manifest) as conn:
            run = _Run(manifest, path, lock, conn, result, now)
            run.offline_revocation = offline_revocation
            if not conn.sandbox:  # a CRL file that cannot be read stops the run, first
                run.revocation_checker = checker_for(manifest, offline=offline_revocation)
            run.adopt_quarantined()
            while True:
                timeout = RECEIVE_TIMEOUT
                if wait_seconds > 0:  # two reads must not overrun a short wait by much
                    timeout = max(MIN_RECEIVE_TIMEOUT, min(timeout, (deadline - clock()) / 2))
                run.read_queues(timeout)
                result.outstanding = run.outstanding()
                left = deadline - clock()
                if wait_seconds <= 0 or result.outstanding == 0 or left <= 0:
                    break
                if progress is not None:
                    progress(
                        f"{manifest.name}: waiting for {result.outstanding} receipt(s), "
                        f"{_seconds_text(left)} left"
                    )
                sleep(min(poll_seconds, left))
        result.serial = run.lock.serial
        _outcome(run.lock, result)
    return result


#: part states after which the register will not process the attempt
FAILED = frozenset({"rejected", "transport-error"})


def _outcome(lock: lockfile.Lockfile, result: ReceiptsResult) -> None:
    """Where the last attempt stands, whatever this run recorded (a rejection recorded
    an hour ago still fails the next run, until a new attempt or a decision follows)."""
    last = lock.last_attempt
    if last is None:
        return
    result.attempt = last.number
    result.failed = [(p.type, p.state) for p in last.parts if p.state in FAILED]
    result.with_errors = [p.type for p in last.parts if p.state == "accepted-with-errors"]


def quarantine_dir(manifest: Manifest) -> Path:
    """`<state dir>/quarantine/<submission name>/`: git-ignored, never in the lockfile."""
    return endpoint.state_dir(manifest) / "quarantine" / manifest.name


def list_quarantine(manifest: Manifest) -> list[QuarantinedReceipt]:
    """The submission's quarantined messages, oldest first (for `status`)."""
    return sorted(
        (entry for entry in _read_quarantine(quarantine_dir(manifest))),
        key=lambda q: (q.quarantined_at, q.path.name),
    )


def summary_line(result: ReceiptsResult) -> str:
    """One line per submission: what this run recorded and what is still awaited."""
    if result.nothing_to_do:
        return f"{result.name}: {result.nothing_to_do}"
    done = [f"{p.type} {p.state}" for p in (*result.recorded, *result.transport_errors)]
    parts = [f"{len(done)} recorded" + (f" ({', '.join(done)})" if done else "")]
    if result.duplicates:
        parts.append(f"{result.duplicates} duplicate(s) ignored")
    if result.reexamined:
        parts.append(f"{result.reexamined} from quarantine now verified")
    if result.quarantined:
        parts.append(f"{len(result.quarantined)} quarantined")
    if result.refused:
        parts.append(f"{len(result.refused)} refused as too large")
    waiting = (
        f"still waiting for {result.outstanding} receipt(s)"
        if result.outstanding
        else "nothing outstanding"
    )
    return f"{result.name}: {', '.join(parts)}; {waiting} (lockfile serial {result.serial})"


def detail_lines(result: ReceiptsResult) -> list[str]:
    """Codes and DN of each recorded error, scrubbed; never OT, which may quote the data."""
    lines: list[str] = []
    for p in result.recorded:
        lines.append(f"  {p.type} {p.msg_id}: {p.state}")
        for e in p.errors:
            lines.append("    " + privacy.scrub(f"{e.code}: {e.text}" if e.text else e.code))
    for p in result.transport_errors:
        lines.append(privacy.scrub(f"  {p.type} {p.msg_id}: transport-error {', '.join(p.codes)}"))
    for q in result.quarantined:
        lines.append(privacy.scrub(f"  quarantined: {q}"))
    lines.extend(f"  {line}" for line in result.refused)
    return lines


# --- one run ----------------------------------------------------------------------


class _Effect(Protocol):
    """What a message means, made durable by `commit` before the delivery is accepted."""

    def commit(self, run: _Run) -> None: ...

    def report(self, result: ReceiptsResult) -> None: ...


@dataclass
class _Record:
    """A new lockfile in which one part moved on."""

    lock: lockfile.Lockfile
    part: RecordedPart
    transport_error: bool = False

    def commit(self, run: _Run) -> None:
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


class _Duplicate:
    """Already recorded: nothing to write, and the delivery can go."""

    def commit(self, run: _Run) -> None:
        pass

    def report(self, result: ReceiptsResult) -> None:
        result.duplicates += 1


@dataclass
class _Quarantine:
    """Keep the message, outside the lockfile, with why it could not be recorded."""

    message: IncomingMessage
    kind: str
    reason: str
    original_msg_id: str | None = None
    written: Path | None = None

    def commit(self, run: _Run) -> None:
        try:
            self.written = _write_quarantine(
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


class _StoredDelivery:
    """A quarantined message offered again: accepting it removes it from quarantine."""

    def __init__(self, entry: QuarantinedReceipt, message: IncomingMessage) -> None:
        self.entry = entry
        self.message = message

    def accept(self) -> None:
        self.entry.metadata_path.unlink(missing_ok=True)  # the marker first: body alone is inert
        self.entry.path.unlink(missing_ok=True)

    def release(self) -> None:
        pass


class _Run:
    """One submission's lockfile, connection and result while its queues are read."""

    def __init__(
        self,
        manifest: Manifest,
        lock_path: Path,
        lock: lockfile.Lockfile,
        conn: endpoint.Connection,
        result: ReceiptsResult,
        now: Callable[[], dt.datetime],
    ) -> None:
        self.manifest = manifest
        self.lock_path = lock_path
        self.lock = lock
        self.conn = conn
        self.result = result
        self.now = now
        #: `--offline-revocation`: a signer whose revocation cannot be checked is accepted
        self.offline_revocation = False
        #: one per run, so a CRL is fetched once for all receipts; None in the sandbox
        self.revocation_checker: Checker | None = None

    # --- reading ----------------------------------------------------------------

    def read_queues(self, timeout: float) -> None:
        address = self.conn.addressing
        for queue, decide in (
            (address.reply_queue, self.decide_receipt),
            (address.error_queue, self.decide_error),
        ):
            for delivery in self.conn.transport.receive(queue, timeout=timeout):
                self.process(delivery, decide)
        # messages the transport refused itself (too large), one line each; optional API
        take_refusals = getattr(self.conn.transport, "take_refusals", None)
        if take_refusals is not None:
            self.result.refused.extend(privacy.scrub(line) for line in take_refusals())

    def adopt_quarantined(self) -> None:
        """Record quarantined messages (of any submission) that match this lockfile now."""
        address = self.conn.addressing
        decide_by_queue = {
            address.reply_queue: self.decide_receipt,
            address.error_queue: self.decide_error,
        }
        root = endpoint.state_dir(self.manifest) / "quarantine"
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for folder in folders:
            for entry in _read_quarantine(folder):
                if entry.kind == UNVERIFIED and entry.queue == address.reply_queue:
                    self.reexamine_unverified(entry)
                    continue
                decide = decide_by_queue.get(entry.queue)
                if entry.kind != UNMATCHED or decide is None or not entry.original_msg_id:
                    continue
                if _find_part(self.lock, entry.original_msg_id) is None:
                    continue
                message = _stored_message(entry)
                if message is None:
                    continue
                effect = decide(message)
                if isinstance(effect, _Quarantine):
                    continue  # still not recordable: leave it where it is
                self.process(_StoredDelivery(entry, message), lambda _m, e=effect: e)

    def reexamine_unverified(self, entry: QuarantinedReceipt) -> None:
        """Try an `unverified` receipt again with today's keys and trust anchors.

        A receipt fails verification when the manifest names the wrong register
        certificate or trust anchor; once that is fixed, the next run records it. The
        certificates are checked as of when it was quarantined (it arrived then), so a
        certificate that expired since does not lose it. Still unverifiable: it stays.
        Now readable but for another submission or otherwise unrecordable: its entry
        says so from now on (kind and reason rewritten), so the right run adopts it.
        """
        message = _stored_message(entry)
        if message is None:
            return  # damaged files: listed by status, never guessed at
        effect = self.decide_receipt(message, at=_parse_iso(entry.quarantined_at))
        if isinstance(effect, _Quarantine):
            if effect.kind != UNVERIFIED:
                _rewrite_quarantine(entry, effect.kind, effect.reason, effect.original_msg_id)
            return
        self.result.reexamined += 1
        self.process(_StoredDelivery(entry, message), lambda _m, e=effect: e)

    def process(self, delivery: Delivery, decide: Callable[[IncomingMessage], _Effect]) -> None:
        """Decide, make it durable, and only then accept; release if it never became durable."""
        durable = False
        try:
            effect = decide(delivery.message)
            effect.commit(self)
            durable = True
            _crash_point("receipt-recorded")
            effect.report(self.result)
        finally:
            if durable:
                delivery.accept()
            else:
                _release_quietly(delivery)

    def outstanding(self) -> int:
        last = self.lock.last_attempt
        return sum(1 for p in last.parts if p.state in WAITING) if last else 0

    # --- deciding -----------------------------------------------------------------

    def quarantine(
        self, message: IncomingMessage, kind: str, reason: str, original: str | None = None
    ) -> _Quarantine:
        return _Quarantine(message, kind, privacy.scrub(reason), original)

    def decide_receipt(self, message: IncomingMessage, *, at: dt.datetime | None = None) -> _Effect:
        """What an AppRec means; certificates are checked as of `at` (default: now)."""
        keys = self.conn.keys
        try:
            moment = self.now()  # revocation: what the CAs say now, with CRLs valid now
            hook = (
                None
                if self.revocation_checker is None
                else receipt_revocation_hook(
                    self.manifest,
                    offline=self.offline_revocation,
                    now=moment,
                    checker=self.revocation_checker,
                )
            )
            content = decrypt_then_verify(
                message.body,
                own_cert=keys.encryption_cert,
                own_key=keys.encryption_key,
                sender_certs=[keys.register_signing_cert],
                trust_anchors=keys.trust_anchors,
                now=at or moment,
                previous=keys.encryption_previous,
                intermediates=keys.intermediates,
                revocation=hook,
            )
        except IplosctlError as exc:
            return self.quarantine(message, UNVERIFIED, f"not accepted as the register's: {exc}")
        except Exception as exc:  # a hostile blob must not stop every later run
            return self.quarantine(
                message, UNVERIFIED, f"could not be decrypted ({type(exc).__name__})"
            )
        try:
            rec = parse_apprec(content)
        except IplosctlError as exc:
            return self.quarantine(message, MALFORMED, f"not a readable AppRec: {exc}")
        except Exception as exc:
            return self.quarantine(
                message, MALFORMED, f"could not be parsed ({type(exc).__name__})"
            )
        return self._receipt_effect(message, rec)

    def _receipt_effect(self, message: IncomingMessage, rec: AppRec) -> _Effect:
        original = rec.original_msg_id
        state = lockfile.RECEIPT_STATES.get(rec.status)
        if state is None:
            return self.quarantine(
                message,
                UNEXPECTED,
                f"AppRec {rec.msg_id} has status {rec.status!r}, not 1, 2 or 3",
                original,
            )
        found = _find_part(self.lock, original)
        if found is None:
            return self.quarantine(
                message,
                UNMATCHED,
                f"AppRec {rec.msg_id} answers message {original}, which is not in "
                f"{self.lock_path.name}",
                original,
            )
        _, part = found
        if rec.original_msg_type != part.type:
            return self.quarantine(
                message,
                CONFLICT,
                f"AppRec {rec.msg_id} answers a {rec.original_msg_type} with id {original}, but "
                f"that id is our {part.type}",
                original,
            )
        if part.receipt is not None and part.receipt.receipt_id == rec.msg_id:
            return _Duplicate()
        if part.state not in WAITING:
            if part.state == state:
                return _Duplicate()  # the same verdict again, under a new AppRec id
            return self.quarantine(
                message,
                CONFLICT,
                f"AppRec {rec.msg_id} says {state}, but {part.type} {original} is already "
                f"{part.state}",
                original,
            )
        # DN and OT are the register's free text and may quote a person id: the lockfile is
        # committed and printed, so it keeps them scrubbed (DESIGN.md §5). The AppRec itself
        # is not kept: its codes and the scrubbed texts are what anyone needs to act.
        errors = [
            lockfile.ReceiptError(
                code=privacy.scrub(e.code or ""),
                system=privacy.scrub(e.system or ""),
                text=privacy.scrub(e.text or ""),
                original_text=privacy.scrub(e.original_text or ""),
            )
            for e in rec.errors
        ]
        lock = copy.deepcopy(self.lock)
        _, target = _find_part(lock, original)  # type: ignore[misc]
        if target.state == "journaled":
            lockfile.transition(target, "sent")  # sent, but the crash kept it from the lockfile
        lockfile.transition(target, state)
        target.receipt = lockfile.Receipt(
            status=rec.status,
            receipt_id=rec.msg_id,
            received_at=_gen_date_utc(rec.gen_date),
            errors=errors,
        )
        target.receipt_at = _iso(self.now())
        codes = tuple(e.code for e in errors if e.code)
        return _Record(lock, RecordedPart(target.type, target.msg_id, state, codes, tuple(errors)))

    def decide_error(self, message: IncomingMessage) -> _Effect:
        props = message.application_properties
        original = (props.get(ORIGINAL_MESSAGE_ID) or "").strip()
        condition = privacy.scrub((props.get(ERROR_CONDITION) or "").strip())
        if not original or not condition:
            return self.quarantine(
                message,
                UNEXPECTED,
                f"error-queue message without {ORIGINAL_MESSAGE_ID} or {ERROR_CONDITION}",
                original or None,
            )
        found = _find_part(self.lock, original)
        if found is None:
            return self.quarantine(
                message,
                UNMATCHED,
                f"transport error {condition} for message {original}, which is not in "
                f"{self.lock_path.name}",
                original,
            )
        _, part = found
        mismatch = self._error_origin_mismatch(message, part)
        if mismatch:
            return self.quarantine(
                message,
                MISMATCHED,
                f"transport error {condition} for {part.type} {original} is not from the "
                f"register to us about that part ({mismatch}): error-queue messages are "
                "unsigned, so it was not recorded",
                original,
            )
        # The condition is the bus's code; description and data are free text from the
        # receiver and may quote data: all of it goes through the one scrubber before the
        # lockfile (DESIGN.md §5); the unscrubbed text is not kept anywhere.
        error = {"condition": condition}
        for key, prop in (("description", ERROR_DESCRIPTION), ("data", ERROR_CONDITION_DATA)):
            value = (props.get(prop) or "").strip()
            if value:
                error[key] = privacy.scrub(value)
        if part.state == "transport-error" and part.transport_error == error:
            return _Duplicate()
        if part.state not in WAITING:
            return self.quarantine(
                message,
                CONFLICT,
                f"transport error {condition} for {part.type} {original}, which is already "
                f"{part.state}",
                original,
            )
        lock = copy.deepcopy(self.lock)
        _, target = _find_part(lock, original)  # type: ignore[misc]
        lockfile.transition(target, "transport-error")
        target.transport_error = error
        target.receipt_at = _iso(self.now())
        return _Record(
            lock,
            RecordedPart(target.type, target.msg_id, "transport-error", (condition,)),
            transport_error=True,
        )

    def _error_origin_mismatch(self, message: IncomingMessage, part: lockfile.Part) -> str:
        """What about an error-queue message does not fit the part it names ("" if all does).

        NHN's receivers answer a transport problem with an unsigned, empty message on the
        sender's error queue, `fromHerId`/`toHerId` swapped and the original subject kept
        (DOMAIN.md §5.7). Anyone on the bus can write such a message, so it is recorded
        only when it claims to come from the register's HER-id, to the HER-id we sent
        from, about a message of the part's type; everything else is quarantined.
        """
        address = self.conn.addressing
        props = message.application_properties
        wanted = {
            "fromHerId": str(address.receiver_her_id),
            "toHerId": str(address.service_her_id),
        }
        problems = [
            f"{key} {_short(props.get(key))} is not {value}"
            for key, value in wanted.items()
            if (props.get(key) or "").strip() != value
        ]
        if (message.subject or "").strip() != part.type:
            problems.append(f"subject {_short(message.subject)} is not {part.type}")
        return "; ".join(problems)


# --- helpers ----------------------------------------------------------------------


def _short(value: str | None) -> str:
    """An outside value for a reason line: quoted, at most 40 characters."""
    if value is None or not value.strip():
        return "(missing)"
    text = value.strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _find_part(
    lock: lockfile.Lockfile, msg_id: str
) -> tuple[lockfile.Attempt, lockfile.Part] | None:
    """The part a message id names; .NET writes GUIDs in upper case, so case is ignored."""
    found = lock.part(msg_id)
    if found is not None:
        return found
    wanted = msg_id.strip().lower()
    for attempt in lock.attempts:
        for part in attempt.parts:
            if part.msg_id.lower() == wanted:
                return attempt, part
    return None


def _release_quietly(delivery: Delivery) -> None:
    """Give the message back; if even that fails, closing the connection requeues it."""
    try:
        delivery.release()
    except (TransportError, RuntimeError) as exc:
        log.debug("releasing a delivery failed (%s); it returns when the connection closes", exc)


def _seconds_text(seconds: float) -> str:
    whole = max(int(seconds + 0.5), 0)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- the quarantine folder ----------------------------------------------------------


def _write_quarantine(
    folder: Path, submission: str, item: _Quarantine, moment: dt.datetime
) -> Path:
    """Write `<UTC time>-<message id>.p7m` and its `.json`; the same message twice is kept once."""
    message = item.message
    digest = hashlib.sha256(message.body).hexdigest()
    private_dir(folder)  # the state folder above it too, when this creates it
    for existing in _read_quarantine(folder):
        meta = _load_json(existing.metadata_path) or {}
        if (
            meta.get("bodySha256") == digest
            and existing.message_id == message.message_id
            and existing.queue == message.queue
            and existing.path.exists()
        ):
            return existing.path  # redelivered after a crash before accept
    # the message id comes from outside too: scrubbed before it names a file
    safe_id = _UNSAFE_NAME.sub("_", privacy.scrub(message.message_id or ""))[:80]
    safe_id = safe_id or str(uuid.uuid4())
    stem = f"{moment.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{safe_id}"
    n = 1
    while (folder / f"{stem}.json").exists() or (folder / f"{stem}.p7m").exists():
        n += 1
        stem = f"{moment.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{safe_id}-{n}"
    body_path, meta_path = folder / f"{stem}.p7m", folder / f"{stem}.json"
    metadata: dict[str, Any] = {
        "quarantineVersion": QUARANTINE_VERSION,
        "submission": submission,
        "quarantinedAt": _iso(moment),
        "queue": message.queue,
        "kind": item.kind,
        "reason": item.reason,
        "originalMsgId": item.original_msg_id,
        "bodySha256": digest,
        "bodyBytes": len(message.body),
        "amqp": {
            "messageId": message.message_id,
            "correlationId": message.correlation_id,
            "subject": message.subject,
            "applicationProperties": dict(message.application_properties),
        },
    }
    # After `accept` this is the only copy of the message, and it may quote a person: 0600.
    write_atomic(body_path, message.body, mode=0o600)
    # the .json is written last: it is what marks a complete entry
    write_atomic(
        meta_path, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode(), mode=0o600
    )
    return body_path


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


#: damaged quarantine files already warned about in this process (one warning each)
_WARNED_DAMAGED: set[Path] = set()


def _metadata_problem(meta: Mapping[str, Any] | None) -> str | None:
    """What makes a quarantine `.json` unusable, in words that quote none of its content."""
    if meta is None:
        return "not a readable JSON object"
    amqp = meta.get("amqp", {})
    if not isinstance(amqp, Mapping):
        return "'amqp' is not an object"
    for key, value in (
        *((k, meta.get(k, "")) for k in ("quarantinedAt", "queue", "kind", "reason")),
        ("originalMsgId", meta.get("originalMsgId")),
        ("amqp.messageId", amqp.get("messageId")),
        ("amqp.correlationId", amqp.get("correlationId")),
        ("amqp.subject", amqp.get("subject")),
    ):
        if value is not None and not isinstance(value, str):
            return f"{key!r} is not a string"
    if not isinstance(amqp.get("applicationProperties") or {}, Mapping):
        return "'amqp.applicationProperties' is not an object"
    return None


def _warn_damaged(path: Path, problem: str) -> None:
    if path in _WARNED_DAMAGED:
        return
    _WARNED_DAMAGED.add(path)
    log.warning(
        "warning: skipped the damaged quarantine file %s (%s): look at it, then move it out of %s",
        path,
        problem,
        path.parent,
    )


def _read_quarantine(folder: Path) -> Iterable[QuarantinedReceipt]:
    """The folder's entries; a damaged `.json` is skipped with a warning, never fatal: one
    bad file made every `receipts` and `status` run crash (issue 12)."""
    if not folder.is_dir():
        return
    for meta_path in sorted(folder.glob("*.json")):
        meta = _load_json(meta_path)
        problem = _metadata_problem(meta)
        if problem is not None or meta is None:
            _warn_damaged(meta_path, problem or "unreadable")
            continue
        amqp: Mapping[str, Any] = meta.get("amqp") or {}
        yield QuarantinedReceipt(
            path=meta_path.with_suffix(".p7m"),
            metadata_path=meta_path,
            quarantined_at=str(meta.get("quarantinedAt", "")),
            queue=str(meta.get("queue", "")),
            kind=str(meta.get("kind", "")),
            reason=str(meta.get("reason", "")),
            message_id=amqp.get("messageId"),
            original_msg_id=meta.get("originalMsgId"),
        )


def _parse_iso(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _rewrite_quarantine(
    entry: QuarantinedReceipt, kind: str, reason: str, original_msg_id: str | None
) -> None:
    """Give an entry a new kind and reason (the body is untouched); skip it if damaged."""
    meta = _load_json(entry.metadata_path)
    if meta is None:
        return
    meta.update(kind=kind, reason=reason, originalMsgId=original_msg_id)
    write_atomic(
        entry.metadata_path,
        (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
        mode=0o600,
    )


def _stored_message(entry: QuarantinedReceipt) -> IncomingMessage | None:
    """The quarantined message as it came off the queue, or None if its files are damaged."""
    meta = _load_json(entry.metadata_path)
    try:
        body = entry.path.read_bytes()
    except OSError:
        return None
    if _metadata_problem(meta) is not None or meta is None:
        return None  # changed since it was listed: the next run warns about it
    if hashlib.sha256(body).hexdigest() != meta.get("bodySha256"):
        return None
    amqp: Mapping[str, Any] = meta.get("amqp") or {}
    props = amqp.get("applicationProperties") or {}
    return IncomingMessage(
        queue=entry.queue,
        message_id=amqp.get("messageId"),
        correlation_id=amqp.get("correlationId"),
        subject=amqp.get("subject"),
        body=body,
        application_properties={str(k): str(v) for k, v in props.items()},
    )
