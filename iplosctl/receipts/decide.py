"""receipts.decide: what one message from the register means for this lockfile.

An AppRec from the reply queue (DOMAIN.md §4, §5.6) or an error-queue message (§5.7)
becomes exactly one effect (`receipts.effects`): a new lockfile in which one part moved
on, a duplicate of something already recorded, or a quarantine entry with a reason
that holds no personal data. Deciding writes nothing; the run loop commits.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from iplosctl import endpoint, lockfile, privacy
from iplosctl.certificates import receipt_revocation_hook
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.payload.apprec import AppRec, parse_apprec
from iplosctl.payload.cms import decrypt_then_verify
from iplosctl.payload.revocation import Checker
from iplosctl.plugins import IncomingMessage
from iplosctl.receipts.effects import Duplicate, Effect, Quarantine, Record
from iplosctl.receipts.model import (
    CONFLICT,
    ERROR_CONDITION,
    ERROR_CONDITION_DATA,
    ERROR_DESCRIPTION,
    MALFORMED,
    MISMATCHED,
    ORIGINAL_MESSAGE_ID,
    UNEXPECTED,
    UNMATCHED,
    UNVERIFIED,
    WAITING,
    ReceiptsResult,
    RecordedPart,
    iso_z,
)


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
    return iso_z(moment)


class Decisions:
    """One submission's lockfile, connection and result, and what each message means for
    them; `receipts.run._Run` adds the reading. `lock` is replaced by each commit, so the
    next message is decided against what is recorded by then."""

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

    def quarantine(
        self, message: IncomingMessage, kind: str, reason: str, original: str | None = None
    ) -> Quarantine:
        return Quarantine(message, kind, privacy.scrub(reason), original)

    def decide_receipt(self, message: IncomingMessage, *, at: dt.datetime | None = None) -> Effect:
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

    def _receipt_effect(self, message: IncomingMessage, rec: AppRec) -> Effect:
        original = rec.original_msg_id
        state = lockfile.RECEIPT_STATES.get(rec.status)
        if state is None:
            return self.quarantine(
                message,
                UNEXPECTED,
                f"AppRec {rec.msg_id} has status {rec.status!r}, not 1, 2 or 3",
                original,
            )
        found = find_part(self.lock, original)
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
            return Duplicate()
        if part.state not in WAITING:
            if part.state == state:
                return Duplicate()  # the same verdict again, under a new AppRec id
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
        _, target = find_part(lock, original)  # type: ignore[misc]
        if target.state == "journaled":
            lockfile.transition(target, "sent")  # sent, but the crash kept it from the lockfile
        lockfile.transition(target, state)
        target.receipt = lockfile.Receipt(
            status=rec.status,
            receipt_id=rec.msg_id,
            received_at=_gen_date_utc(rec.gen_date),
            errors=errors,
        )
        target.receipt_at = iso_z(self.now())
        codes = tuple(e.code for e in errors if e.code)
        return Record(lock, RecordedPart(target.type, target.msg_id, state, codes, tuple(errors)))

    def decide_error(self, message: IncomingMessage) -> Effect:
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
        found = find_part(self.lock, original)
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
            return Duplicate()
        if part.state not in WAITING:
            return self.quarantine(
                message,
                CONFLICT,
                f"transport error {condition} for {part.type} {original}, which is already "
                f"{part.state}",
                original,
            )
        lock = copy.deepcopy(self.lock)
        _, target = find_part(lock, original)  # type: ignore[misc]
        lockfile.transition(target, "transport-error")
        target.transport_error = error
        target.receipt_at = iso_z(self.now())
        return Record(
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


def find_part(
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
