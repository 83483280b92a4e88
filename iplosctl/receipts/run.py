"""receipts.run: read a submission's queues under its lock, and record what came.

The loop of the package docstring: for each delivery, decide (`receipts.decide`),
make it durable (`receipts.effects`), and only then accept; release it if it never
became durable. Before reading, quarantined messages that match this lockfile now are
adopted (`receipts.quarantine`). `collect_receipts` returns a `ReceiptsResult`; the
words the CLI prints are in `receipts.render`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from iplosctl import endpoint, inflight, lockfile, privacy
from iplosctl.certificates import checker_for
from iplosctl.errors import TransportError
from iplosctl.locking import submission_lock
from iplosctl.manifest import Manifest
from iplosctl.plugins import Delivery, IncomingMessage
from iplosctl.receipts.decide import Decisions, find_part
from iplosctl.receipts.effects import Effect, Quarantine, StoredDelivery
from iplosctl.receipts.model import (
    FAILED,
    UNMATCHED,
    UNVERIFIED,
    WAITING,
    QuarantinedReceipt,
    ReceiptsResult,
    utc_now,
)
from iplosctl.receipts.quarantine import (
    parse_iso,
    read_quarantine,
    rewrite_quarantine,
    stored_message,
)
from iplosctl.receipts.render import seconds_text

log = logging.getLogger(__name__)

#: seconds a receive waits for the next message before the queue counts as empty
RECEIVE_TIMEOUT = 1.0
#: shorter reads could end before a remote broker has delivered what is queued
MIN_RECEIVE_TIMEOUT = 0.5
#: tests set it to a step name to SIGKILL the process there (crash-safety tests)
CRASH_AT_ENV = "IPLOSCTL_TEST_CRASH_AT"


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def collect_receipts(
    manifest: Manifest,
    *,
    wait_seconds: float = 0,
    poll_seconds: float = 2.0,
    lockfile_path: Path | None = None,
    now: Callable[[], dt.datetime] = utc_now,
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
                        f"{seconds_text(left)} left"
                    )
                sleep(min(poll_seconds, left))
        result.serial = run.lock.serial
        _outcome(run.lock, result)
    return result


def _outcome(lock: lockfile.Lockfile, result: ReceiptsResult) -> None:
    """Where the last attempt stands, whatever this run recorded (a rejection recorded
    an hour ago still fails the next run, until a new attempt or a decision follows)."""
    last = lock.last_attempt
    if last is None:
        return
    result.attempt = last.number
    result.failed = [(p.type, p.state) for p in last.parts if p.state in FAILED]
    result.with_errors = [p.type for p in last.parts if p.state == "accepted-with-errors"]


class _Run(Decisions):
    """A submission's `Decisions`, with its queues read and its deliveries settled."""

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
            for entry in read_quarantine(folder):
                if entry.kind == UNVERIFIED and entry.queue == address.reply_queue:
                    self.reexamine_unverified(entry)
                    continue
                decide = decide_by_queue.get(entry.queue)
                if entry.kind != UNMATCHED or decide is None or not entry.original_msg_id:
                    continue
                if find_part(self.lock, entry.original_msg_id) is None:
                    continue
                message = stored_message(entry)
                if message is None:
                    continue
                effect = decide(message)
                if isinstance(effect, Quarantine):
                    continue  # still not recordable: leave it where it is
                self.process(StoredDelivery(entry, message), _decided(effect))

    def reexamine_unverified(self, entry: QuarantinedReceipt) -> None:
        """Try an `unverified` receipt again with today's keys and trust anchors.

        A receipt fails verification when the manifest names the wrong register
        certificate or trust anchor; once that is fixed, the next run records it. The
        certificates are checked as of when it was quarantined (it arrived then), so a
        certificate that expired since does not lose it. Still unverifiable: it stays.
        Now readable but for another submission or otherwise unrecordable: its entry
        says so from now on (kind and reason rewritten), so the right run adopts it.
        """
        message = stored_message(entry)
        if message is None:
            return  # damaged files: listed by status, never guessed at
        effect = self.decide_receipt(message, at=parse_iso(entry.quarantined_at))
        if isinstance(effect, Quarantine):
            if effect.kind != UNVERIFIED:
                rewrite_quarantine(entry, effect.kind, effect.reason, effect.original_msg_id)
            return
        self.result.reexamined += 1
        self.process(StoredDelivery(entry, message), _decided(effect))

    def process(self, delivery: Delivery, decide: Callable[[IncomingMessage], Effect]) -> None:
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


def _decided(effect: Effect) -> Callable[[IncomingMessage], Effect]:
    """A decision already taken (for a quarantined message offered again)."""
    return lambda _message: effect


def _release_quietly(delivery: Delivery) -> None:
    """Give the message back; if even that fails, closing the connection requeues it."""
    try:
        delivery.release()
    except (TransportError, RuntimeError) as exc:
        log.debug("releasing a delivery failed (%s); it returns when the connection closes", exc)
