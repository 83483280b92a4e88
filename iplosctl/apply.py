"""apply: send exactly the reviewed plan, journaling every step in the lockfile.

Per submission, under its lock:
  1. plan again, in one pass over the export that also writes each part's payload
     (plain and gzipped) to a private file under the state folder (`inflight`:
     0700/0600, removed at the end, and after a kill at the next start; for a
     pass-through profile: a copy of the part's file, made in the read that digests
     it), so the export is read once and the digests are those of the bytes
     written; compare with the saved plan (stale → refuse);
  2. open the transport with the manifest's secrets and keys and check the keys
     (a missing secret or passphrase, a refused certificate fail here);
  3. (the second read of the export that used to check the digests is gone);
  4. let the transport `prepare()` (login, queue) while the first part is protected;
  5. only then journal the attempt (all parts `journaled`, message ids fixed) —
     atomically, before the first byte leaves; a failure in 1-4 leaves the
     lockfile byte for byte unchanged;
  6. per part: MsgHead (a compressed RefDoc where the plan says so) → (optional
     official-XSD validation) → CMS sign then encrypt → send, which returns once the
     broker ACCEPTED → write `sent` (protecting runs one part ahead on a worker
     thread, see `_Sender`).
A crash anywhere leaves `journaled` parts that the next plan shows as
`recover` and resends with the same MsgIds; a `sent` part is never resent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iplosctl import endpoint, inflight, lockfile, profiles
from iplosctl.errors import IplosctlError, PayloadError
from iplosctl.formats import EXPORT_V1_NAMESPACE, EXPORT_V1_XSD
from iplosctl.locking import submission_lock
from iplosctl.manifest import Manifest
from iplosctl.payload.cms import check_sending_keys, sign_then_encrypt
from iplosctl.payload.compression import gzip_bytes
from iplosctl.payload.metadata import message_info_properties
from iplosctl.payload.msghead import build_msghead, load_schemas, validate_msghead
from iplosctl.plan import CHANGING, SubmissionPlan, plan_submission
from iplosctl.plugins import OutgoingMessage, TransportPlugin
from iplosctl.private_files import open_private
from iplosctl.savedplan import SavedSubmission

#: what apply reports per step (for progress bars and logs): part type, step
Progress = Callable[[str, str], None]
#: fault-injection tests set this to a step name ("journaled", "accepted") to SIGKILL
#: the process there, proving that the lockfile survives and the rerun recovers
CRASH_AT_ENV = "IPLOSCTL_TEST_CRASH_AT"


#: interruption tests set this to a step name to stop there (printing `paused at STEP` on
#: stderr) until a signal arrives, e.g. the SIGINT of a Ctrl-C
PAUSE_AT_ENV = "IPLOSCTL_TEST_PAUSE_AT"


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_AT_ENV) == step:
        sys.stderr.write(f"paused at {step}\n")
        sys.stderr.flush()
        while True:
            time.sleep(60)  # a signal's handler (SIGINT: KeyboardInterrupt) ends it


class StalePlanError(IplosctlError):
    """The saved plan no longer matches the manifest, export or lockfile."""


@dataclass
class SentPart:
    type: str
    msg_id: str
    size_bytes: int
    sent_at: str


@dataclass
class ApplyResult:
    name: str
    action: str
    attempt: int
    sent: list[SentPart] = field(default_factory=list)
    skipped_reason: str = ""


def check_saved(plan: SubmissionPlan, saved: SavedSubmission) -> None:
    """Refuse when anything the reviewer saw has changed since (DESIGN.md §4)."""
    checks = {
        "manifestDigest": plan.manifest_digest,
        "sourceDigest": plan.source_digest,
        "payloadDigest": plan.payload_digest,
        "profileDigest": plan.profile_digest,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "attempt": plan.attempt,
        "action": plan.action,
    }
    changed = [key for key, value in checks.items() if saved.get(key) != value]
    if changed and _interrupted_apply_of(plan, saved):
        return  # the reviewed attempt, journaled by an apply that did not finish: recover it
    if changed:
        raise StalePlanError(
            f"plan is stale for {plan.name} ({', '.join(changed)} changed): run iplosctl plan again"
        )


def _interrupted_apply_of(plan: SubmissionPlan, saved: SavedSubmission) -> bool:
    """Whether `plan` is the recovery of exactly the attempt `saved` planned (issue 13.5).

    An apply of a saved plan that is interrupted after journaling leaves the attempt
    `journaled`: the lockfile's serial and the action (now `recover`) differ from the
    saved plan's, but what would be sent does not: same digests, same attempt number,
    same message ids. Resending those is what the reviewer approved.
    """
    if plan.action != "recover" or saved.get("action") not in CHANGING:
        return False
    same = (
        "manifestDigest",
        "sourceDigest",
        "payloadDigest",
        "profileDigest",
        "lineage",
        "attempt",
    )
    values = {
        "profileDigest": plan.profile_digest,
        "manifestDigest": plan.manifest_digest,
        "sourceDigest": plan.source_digest,
        "payloadDigest": plan.payload_digest,
        "lineage": plan.lineage,
        "attempt": plan.attempt,
    }
    if any(saved.get(key) != values[key] for key in same):
        return False
    saved_ids = [(p.get("type"), p.get("msgId")) for p in saved.get("parts", [])]
    return saved_ids == [(p.type, p.msg_id) for p in plan.parts]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def apply_submission(
    manifest: Manifest,
    *,
    saved: SavedSubmission | None = None,
    approve: Callable[[SubmissionPlan], bool] = lambda _: True,
    today: dt.date | None = None,
    late: bool = False,
    progress: Progress | None = None,
    now: Callable[[], dt.datetime] = _now,
    offline_revocation: bool = False,
) -> ApplyResult:
    """Apply one validated manifest; see the module docstring for the steps.

    Everything that can fail before a byte leaves (secrets, keys, certificates, the
    export's digest, the transport's `prepare`: login and queue) is checked before
    the attempt is journaled, so such a failure leaves the lockfile byte for byte
    as it was: an attempt in the lockfile means the tool was ready to send it.
    """
    report = progress or (lambda part, step: None)
    lock_path = manifest.lockfile_path
    inflight.remove_stale(manifest)  # a killed apply's payloads go before anything else happens
    profile = profiles.profile_for(manifest)
    with (
        submission_lock(lock_path, "iplosctl apply"),
        inflight.payload_dir(manifest) as tmp,
        _EarlyConnection(manifest, now) as early,
    ):
        # one pass: the plan's analysis writes every part's payload (and, for a part too
        # big to go plain, its gzip form) while the transport connects on a thread
        payload_paths = {p.type: tmp / f"{p.type}.xml" for p in profile.message_parts}
        gzip_paths = {t: path.with_suffix(".xml.gz") for t, path in payload_paths.items()}
        files = {t: open_private(path) for t, path in payload_paths.items()}
        gz_files = {t: open_private(path) for t, path in gzip_paths.items()}
        try:
            plan = plan_submission(
                manifest,
                today=today,
                late=late,
                offline_revocation=offline_revocation,
                payload_outputs=files,
                compressed_outputs=gz_files,
            )
        finally:
            for fh in (*files.values(), *gz_files.values()):
                fh.close()
        if saved is not None:
            check_saved(plan, saved)
        if plan.action not in CHANGING:
            if plan.blocked:
                state = "is waiting for its receipts" if plan.action == "wait" else "is blocked"
                raise IplosctlError(f"{plan.name} {state}, nothing was sent: {plan.reason}")
            return ApplyResult(plan.name, plan.action, plan.attempt, skipped_reason=plan.reason)
        approving = time.monotonic()
        if not approve(plan):
            raise IplosctlError(f"{plan.name}: apply cancelled; nothing was sent")
        idle = time.monotonic() - approving
        with (
            early.connection() as (conn, prepared),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="iplosctl-protect") as worker,
        ):
            # refused certificates fail here, before the transport's connection retries
            keys = conn.keys
            check_sending_keys(
                keys.signing_cert, keys.signing_key, keys.register_encryption_cert, now()
            )
            lock = lockfile.load(lock_path)
            xsd = Path(plan.payload_schema) if plan.payload_schema else EXPORT_V1_XSD
            recorded = _recorded_compression(plan, lock)
            sender = _Sender(
                manifest,
                conn,
                worker,
                payload_paths,
                now,
                payload_xsd=xsd,
                compression=recorded,
                gzip_paths=gzip_paths,
            )
            pending = _pending(plan, lock)
            upcoming = sender.start(pending[0]) if pending else None
            if upcoming is not None:
                report(pending[0].type, "building")
                if not prepared or idle > _EARLY_CONNECTION_MAX_IDLE_SECONDS:
                    _prepare(conn.transport, conn.addressing.to_queue, upcoming[1])
            _crash_point("prepared")  # everything checked, nothing journaled yet
            # the first byte can leave now: only from here on is the attempt journaled
            lock = _journal(lock, plan, plan, now(), recorded)  # the plan carries the summary
            lockfile.save(lock_path, lock)
            report("*", "journaled")
            _crash_point("journaled")
            return sender.send_all(plan, lock, lock_path, upcoming, report)


#: a connection opened while planning is used only if the approval came within this time;
#: after a longer prompt the broker may have dropped the idle connection, so apply prepares
#: again as it did before (the transport reconnects when it must)
_EARLY_CONNECTION_MAX_IDLE_SECONDS = 20.0


class _EarlyConnection:
    """Open the manifest's transport, check the keys and try the transport's `prepare` once,
    on a thread while apply plans.

    Issue 13 (large submissions): apply's end to end should cost one `plan` plus the send.
    Loading the keys, logging in, attaching the sender and proving the queue exists take
    broker round trips that used to follow the planning pass; here they overlap with it.
    Nothing is sent and nothing journaled. An error found here is raised only where apply
    would have connected (after the plan and the approval), so a blocked or no-op plan
    reports what it always did, and a missing secret still fails before the journal
    (lockfile unchanged). A refused key stops the thread before it connects. The early
    `prepare` is one try (`try_prepare`, no backoff, so a blocked plan never waits for
    retries); if it fails, or the approval took long, apply prepares as before, retries
    and error messages included.

    Only for a configured endpoint: the sandbox's built-in register is started where it
    always was, only when there is something to send.
    """

    def __init__(self, manifest: Manifest, now: Callable[[], dt.datetime]) -> None:
        self._manifest, self._now = manifest, now
        self._stack = contextlib.ExitStack()
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[tuple[endpoint.Connection, bool]] | None = None

    def __enter__(self) -> _EarlyConnection:
        if self._manifest.endpoint is not None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iplosctl-connect")
            self._future = self._pool.submit(self._open)
        return self

    def _open(self) -> tuple[endpoint.Connection, bool]:
        conn = self._stack.enter_context(endpoint.connect(self._manifest))
        keys = conn.keys
        check_sending_keys(
            keys.signing_cert, keys.signing_key, keys.register_encryption_cert, self._now()
        )
        try_prepare = getattr(conn.transport, "try_prepare", None)
        prepared = bool(try_prepare(conn.addressing.to_queue)) if try_prepare else False
        return conn, prepared

    @contextlib.contextmanager
    def connection(self) -> Iterator[tuple[endpoint.Connection, bool]]:
        """The early connection (raising what opening it raised) and whether it is prepared,
        or a new connection when there was no early one."""
        if self._future is None:
            with endpoint.connect(self._manifest) as conn:
                yield conn, False
            return
        yield self._future.result()

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # an open in flight finishes before it is closed
        self._stack.close()


def _recorded_compression(plan: SubmissionPlan, lock: lockfile.Lockfile | None) -> dict[str, str]:
    """Which parts go compressed: the plan's choice, or for a recover the journaled one.

    A recover resends the journaled attempt byte for byte (same MsgId, same RefDoc), so it
    uses the encoding the lockfile recorded, not one decided again (a raised limit or a
    newer iplosctl could decide otherwise).
    """
    chosen = {p.type: p.compression for p in plan.parts if p.compression}
    if plan.action != "recover" or lock is None or lock.last_attempt is None:
        return chosen
    parts = lock.last_attempt.parts
    return {p.type: p.compression for p in parts if p.compression}


@dataclass(frozen=True)
class _PendingPart:
    """A part to send: its type and (already fixed) message id."""

    type: str
    msg_id: str


def _pending(plan: SubmissionPlan, lock: lockfile.Lockfile | None) -> list[_PendingPart]:
    """The parts this apply will send: a recover resends only the journaled ones."""
    if plan.action == "recover" and lock is not None and lock.last_attempt is not None:
        return [
            _PendingPart(p.type, p.msg_id)
            for p in lock.last_attempt.parts
            if p.state == "journaled"
        ]
    return [_PendingPart(p.type, p.msg_id) for p in plan.parts]


def _journal(
    lock: lockfile.Lockfile | None,
    plan: SubmissionPlan,
    analysis: Any,
    moment: dt.datetime,
    compression: dict[str, str] | None = None,
) -> lockfile.Lockfile:
    """The attempt to send, written before anything leaves (recover reuses the journaled one).

    Each part records its `compression` ("" for plain), so a recover and `status` know
    which encoding the journaled message has."""
    compression = compression or {}
    if lock is None:
        lock = lockfile.Lockfile(submission=plan.name, lineage=plan.lineage)
    if plan.action == "recover":
        return lock
    stamp = _iso(moment)
    lock.attempts.append(
        lockfile.Attempt(
            number=plan.attempt,
            created_at=stamp,
            manifest_digest=plan.manifest_digest,
            source_digest=plan.source_digest,
            payload_digest=plan.payload_digest,
            summary=dict(analysis.summary),
            parts=[
                lockfile.Part(
                    type=p.type,
                    msg_id=p.msg_id,
                    payload_digest=p.payload_digest,
                    size_bytes=p.size_bytes,
                    journaled_at=stamp,
                    compression=compression.get(p.type, ""),
                )
                for p in plan.parts
            ],
        )
    )
    return lock


class _Sender:
    """Protect and send each `journaled` part, recording `sent` after each ACCEPTED.

    `payload_xsd` is compiled beside MsgHead's when `spec.schemas` is set: the
    export v1 XSD, or a pass-through payload's register-format XSD.

    Protecting (MsgHead, sign, encrypt) runs one part ahead on a worker thread, because
    cryptography and lxml release the GIL: the first part is protected while the
    transport connects, and each next part while the one before it is on the wire.
    Only the main thread talks to the transport and the lockfile, so the order of
    journal writes is that of a plain loop, and a crash leaves the same states.
    """

    def __init__(
        self,
        manifest: Manifest,
        conn: endpoint.Connection,
        worker: ThreadPoolExecutor,
        payload_paths: dict[str, Path],
        now: Callable[[], dt.datetime],
        *,
        payload_xsd: Path = EXPORT_V1_XSD,
        compression: dict[str, str] | None = None,
        gzip_paths: dict[str, Path] | None = None,
    ) -> None:
        profile = profiles.profile_for(manifest)
        # the plan decided which parts go compressed (plan.part_encodings); their gzip
        # bytes were written in the planning pass
        self.compression, self.gzip_paths = compression or {}, gzip_paths or {}
        self.manifest, self.conn, self.worker = manifest, conn, worker
        self.payload_paths, self.now = payload_paths, now
        self.limit = manifest.message_size_limit_bytes or profile.message_limit_bytes
        self.schema = load_schemas(manifest.schemas, [payload_xsd]) if manifest.schemas else None
        self.part_names = {p.type: p.description for p in profile.message_parts}

    def protect(self, part: _PendingPart, moment: dt.datetime) -> bytes:
        keys, address, manifest = self.conn.keys, self.conn.addressing, self.manifest
        code = self.compression.get(part.type)
        msghead = build_msghead(
            msg_type=part.type,
            msg_type_dn=self.part_names.get(part.type, part.type),
            msg_id=part.msg_id,
            gen_date=moment,
            sender_org_name=manifest.municipality.name,
            sender_org_number=manifest.municipality.org_number,
            sender_her_id=str(address.sender_her_id),
            sender_service_name=endpoint.SERVICE_NAME,
            sender_service_her_id=str(address.service_her_id),
            receiver_name=address.receiver_name,
            receiver_her_id=str(address.receiver_her_id),
            payload=self._payload(part.type, code),
            compression=code,
        )
        if self.schema is not None:
            validate_msghead(msghead, self.schema)
        return sign_then_encrypt(
            msghead,
            signer_cert=keys.signing_cert,
            signer_key=keys.signing_key,
            recipient_cert=keys.register_encryption_cert,
            now=moment,
        )

    def _payload(self, part_type: str, code: str | None) -> bytes:
        """The RefDoc content: the plain payload, or its gzip form for a compressed part.

        The planning pass gzips only a part over today's limit; a recover of a part
        journaled compressed under another limit compresses it here, to the same bytes
        (gzip at a fixed level with a fixed header is a pure function of the payload)."""
        plain = self.payload_paths[part_type]
        if not code:
            return plain.read_bytes()
        packed = self.gzip_paths.get(part_type)
        if packed is not None and packed.exists() and packed.stat().st_size:
            return packed.read_bytes()
        return gzip_bytes(plain.read_bytes())

    def start(self, part: _PendingPart) -> tuple[dt.datetime, Future[bytes]]:
        moment = self.now()
        return moment, self.worker.submit(self.protect, part, moment)

    def send_all(
        self,
        plan: SubmissionPlan,
        lock: lockfile.Lockfile,
        lock_path: Path,
        upcoming: tuple[dt.datetime, Future[bytes]] | None,
        report: Progress,
    ) -> ApplyResult:
        attempt = lock.attempts[-1]
        result = ApplyResult(plan.name, plan.action, attempt.number)
        pending = [part for part in attempt.parts if part.state == "journaled"]  # sent: never
        if not pending or upcoming is None:
            return result
        address = self.conn.addressing
        for index, part in enumerate(pending):
            if index:
                report(part.type, "building")
            moment, protected = upcoming
            body = protected.result()
            if index + 1 < len(pending):
                following = pending[index + 1]
                upcoming = self.start(_PendingPart(following.type, following.msg_id))
            if len(body) > self.limit:
                raise PayloadError(
                    f"{part.type} is {len(body):,} bytes, over the {self.limit:,} byte limit: "
                    "agree a larger limit with NHN and set spec.messageSizeLimitBytes"
                )
            properties = {
                "fromHerId": str(address.service_her_id),
                "toHerId": str(address.receiver_her_id),
                "applicationTimeStamp": _iso(moment),
            }
            if address.cpa_id:
                properties["cpaId"] = address.cpa_id
            properties.update(  # HNM's X-MessageInfo-* and level ids (payload/metadata.py)
                message_info_properties(
                    msg_type=part.type,
                    msg_id=part.msg_id,
                    sender_her_id=str(address.sender_her_id),
                    sender_service_her_id=str(address.service_her_id),
                    receiver_her_id=str(address.receiver_her_id),
                    schema_namespace=EXPORT_V1_NAMESPACE,
                )
            )
            report(part.type, "sending")
            self.conn.transport.send(
                OutgoingMessage(
                    message_id=part.msg_id,
                    correlation_id=part.msg_id,
                    subject=part.type,
                    body=body,
                    to_queue=address.to_queue,
                    reply_to=address.reply_queue,
                    application_properties=properties,
                )
            )
            _crash_point("accepted")  # the broker has it; the lockfile does not know yet
            lockfile.transition(part, "sent")
            part.sent_at = _iso(self.now())
            lockfile.save(lock_path, lock)
            report(part.type, "sent")
            result.sent.append(SentPart(part.type, part.msg_id, len(body), part.sent_at))
        return result


def _prepare(transport: TransportPlugin, to_queue: str, first: Future[bytes]) -> None:
    """Let the transport connect while the first part is protected (plugins may skip it).

    When both fail, the part's error is the one reported: it needs fixing first, and
    a connection error would only hide it until the next run.
    """
    prepare = getattr(transport, "prepare", None)
    if prepare is None:
        return
    try:
        prepare(to_queue)
    except IplosctlError:
        first.result()
        raise
