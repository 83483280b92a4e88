"""apply: send exactly the reviewed plan, journaling every step in the lockfile.

Per submission, under its lock:
  1. plan again in one pass over the export that also writes each part's payload
     (plain and gzipped; for a pass-through profile a copy of the part's file) to a
     private temporary file, so the digests the plan checks are those of the bytes
     written, and the export is read once; compare with the saved plan (stale → refuse);
  2. journal the attempt (all parts `journaled`, message ids fixed) — atomically,
     before the first byte leaves;
  3. per part: MsgHead (a compressed RefDoc where the plan says so) → (optional
     official-XSD validation) → CMS sign then encrypt → send, which returns once the
     broker ACCEPTED → write `sent` (protecting runs one part ahead on a worker
     thread, see `_send_parts`).
A crash anywhere leaves `journaled` parts that the next plan shows as
`recover` and resends with the same MsgIds; a `sent` part is never resent.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iplosctl import endpoint, lockfile, profiles
from iplosctl.errors import IplosctlError, PayloadError
from iplosctl.formats import EXPORT_V1_NAMESPACE, EXPORT_V1_XSD
from iplosctl.locking import submission_lock
from iplosctl.manifest import Manifest
from iplosctl.payload.cms import check_sending_keys, sign_then_encrypt
from iplosctl.payload.metadata import message_info_properties
from iplosctl.payload.msghead import build_msghead, load_schemas, validate_msghead
from iplosctl.plan import CHANGING, SubmissionPlan, plan_submission
from iplosctl.plugins import OutgoingMessage, TransportPlugin

#: what apply reports per step (for progress bars and logs): part type, step
Progress = Callable[[str, str], None]
#: fault-injection tests set this to a step name ("journaled", "accepted") to SIGKILL
#: the process there, proving that the lockfile survives and the rerun recovers
CRASH_AT_ENV = "IPLOSCTL_TEST_CRASH_AT"


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


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


def check_saved(plan: SubmissionPlan, saved: dict[str, Any]) -> None:
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
    if changed:
        raise StalePlanError(
            f"plan is stale for {plan.name} ({', '.join(changed)} changed): run iplosctl plan again"
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def apply_submission(
    manifest: Manifest,
    *,
    saved: dict[str, Any] | None = None,
    approve: Callable[[SubmissionPlan], bool] = lambda _: True,
    today: dt.date | None = None,
    late: bool = False,
    progress: Progress | None = None,
    now: Callable[[], dt.datetime] = _now,
    offline_revocation: bool = False,
) -> ApplyResult:
    """Apply one validated manifest; see the module docstring for the steps."""
    report = progress or (lambda part, step: None)
    lock_path = manifest.lockfile_path
    profile = profiles.profile_for(manifest)
    with (
        submission_lock(lock_path, "iplosctl apply"),
        tempfile.TemporaryDirectory(prefix="iplosctl-apply-") as tmp,
    ):
        # one pass: the plan's analysis writes every part's payload, plain and gzipped
        payload_paths = {p.type: Path(tmp) / f"{p.type}.xml" for p in profile.message_parts}
        gzip_paths = {t: path.with_suffix(".xml.gz") for t, path in payload_paths.items()}
        files = {t: path.open("wb") for t, path in payload_paths.items()}
        gz_files = {t: path.open("wb") for t, path in gzip_paths.items()}
        try:
            plan = plan_submission(
                manifest,
                today=today,
                late=late,
                payload_outputs=files,
                compressed_outputs=gz_files,
                offline_revocation=offline_revocation,
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
        if not approve(plan):
            raise IplosctlError(f"{plan.name}: apply cancelled; nothing was sent")
        lock = lockfile.load(lock_path)
        lock = _journal(lock, plan, plan, now())  # the plan carries the analysis' summary
        lockfile.save(lock_path, lock)
        report("*", "journaled")
        _crash_point("journaled")
        xsd = Path(plan.payload_schema) if plan.payload_schema else EXPORT_V1_XSD
        return _send_parts(
            manifest,
            plan,
            lock,
            lock_path,
            payload_paths,
            report,
            now,
            gzip_paths=gzip_paths,
            payload_xsd=xsd,
        )


def _journal(
    lock: lockfile.Lockfile | None, plan: SubmissionPlan, analysis: Any, moment: dt.datetime
) -> lockfile.Lockfile:
    """The attempt to send, written before anything leaves (recover reuses the journaled one)."""
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
                )
                for p in plan.parts
            ],
        )
    )
    return lock


def _send_parts(
    manifest: Manifest,
    plan: SubmissionPlan,
    lock: lockfile.Lockfile,
    lock_path: Path,
    payload_paths: dict[str, Path],
    report: Progress,
    now: Callable[[], dt.datetime],
    *,
    gzip_paths: dict[str, Path] | None = None,
    payload_xsd: Path = EXPORT_V1_XSD,
) -> ApplyResult:
    """Protect and send each `journaled` part, recording `sent` after each ACCEPTED.

    `payload_xsd` is compiled beside MsgHead's when `spec.schemas` is set: the
    export v1 XSD, or a pass-through payload's register-format XSD.

    Protecting (MsgHead, sign, encrypt) runs one part ahead on a worker thread, because
    cryptography and lxml release the GIL: the first part is protected while the
    transport connects, and each next part while the one before it is on the wire.
    Only the main thread talks to the transport and the lockfile, so the order of
    journal writes is that of a plain loop, and a crash leaves the same states.
    """
    attempt = lock.attempts[-1]
    result = ApplyResult(plan.name, plan.action, attempt.number)
    pending = [part for part in attempt.parts if part.state == "journaled"]  # sent: never again
    if not pending:
        return result
    profile = profiles.profile_for(manifest)
    limit = manifest.message_size_limit_bytes or profile.message_limit_bytes
    schema = load_schemas(manifest.schemas, [payload_xsd]) if manifest.schemas else None
    part_names = {p.type: p.description for p in profile.message_parts}
    # the plan decided which parts go compressed (plan.part_encodings); their gzip bytes
    # were written in the planning pass
    compression = {p.type: p.compression for p in plan.parts if p.compression}
    with (
        endpoint.connect(manifest) as conn,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="iplosctl-protect") as worker,
    ):
        keys, address = conn.keys, conn.addressing
        # refused certificates fail here, before the transport's connection retries
        check_sending_keys(
            keys.signing_cert, keys.signing_key, keys.register_encryption_cert, now()
        )

        def protect(part: lockfile.Part, moment: dt.datetime) -> bytes:
            code = compression.get(part.type)
            if code and gzip_paths is None:
                raise PayloadError(f"{part.type} is planned compressed, but no gzip form exists")
            payload = gzip_paths[part.type] if code and gzip_paths else payload_paths[part.type]
            msghead = build_msghead(
                msg_type=part.type,
                msg_type_dn=part_names.get(part.type, part.type),
                msg_id=part.msg_id,
                gen_date=moment,
                sender_org_name=manifest.municipality.name,
                sender_org_number=manifest.municipality.org_number,
                sender_her_id=str(address.sender_her_id),
                sender_service_name=endpoint.SERVICE_NAME,
                sender_service_her_id=str(address.service_her_id),
                receiver_name=address.receiver_name,
                receiver_her_id=str(address.receiver_her_id),
                payload=payload.read_bytes(),
                compression=code or None,
            )
            if schema is not None:
                validate_msghead(msghead, schema)
            return sign_then_encrypt(
                msghead,
                signer_cert=keys.signing_cert,
                signer_key=keys.signing_key,
                recipient_cert=keys.register_encryption_cert,
                now=moment,
            )

        def start(part: lockfile.Part) -> tuple[dt.datetime, Future[bytes]]:
            moment = now()
            return moment, worker.submit(protect, part, moment)

        report(pending[0].type, "building")
        upcoming = start(pending[0])
        _prepare(conn.transport, address.to_queue, upcoming[1])
        for index, part in enumerate(pending):
            if index:
                report(part.type, "building")
            moment, protected = upcoming
            body = protected.result()
            if index + 1 < len(pending):
                upcoming = start(pending[index + 1])
            if len(body) > limit:
                raise PayloadError(
                    f"{part.type} is {len(body):,} bytes, over the {limit:,} byte limit: agree a "
                    "larger limit with NHN and set spec.messageSizeLimitBytes"
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
            conn.transport.send(
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
            part.sent_at = _iso(now())
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
