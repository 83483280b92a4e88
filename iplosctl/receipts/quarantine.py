"""receipts.quarantine: the folder where messages that cannot be recorded are kept.

A message that matches no part, fails verification, does not parse or contradicts
the lockfile is never dropped: after the delivery is accepted this folder holds the
only copy. Each entry is a `.p7m` (the body as received, 0600) and a `.json` beside
it, written last, that marks the entry complete. A damaged `.json` is skipped with
one warning, never fatal (issue 12). Nothing here decides what a message means;
`receipts.decide` does, and the run loop adopts entries back (`receipts.run`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from iplosctl import endpoint, privacy
from iplosctl.atomic import write_atomic
from iplosctl.manifest import Manifest
from iplosctl.plugins import IncomingMessage
from iplosctl.private_files import private_dir
from iplosctl.receipts.model import QuarantinedReceipt, iso_z

log = logging.getLogger(__name__)

QUARANTINE_VERSION = 1

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class Held(Protocol):
    """What is kept of a message that could not be recorded (a `Quarantine` effect)."""

    @property
    def message(self) -> IncomingMessage: ...

    @property
    def kind(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def original_msg_id(self) -> str | None: ...


def quarantine_dir(manifest: Manifest) -> Path:
    """`<state dir>/quarantine/<submission name>/`: git-ignored, never in the lockfile."""
    return endpoint.state_dir(manifest) / "quarantine" / manifest.name


def list_quarantine(manifest: Manifest) -> list[QuarantinedReceipt]:
    """The submission's quarantined messages, oldest first (for `status`)."""
    return sorted(
        (entry for entry in read_quarantine(quarantine_dir(manifest))),
        key=lambda q: (q.quarantined_at, q.path.name),
    )


def write_quarantine(folder: Path, submission: str, item: Held, moment: dt.datetime) -> Path:
    """Write `<UTC time>-<message id>.p7m` and its `.json`; the same message twice is kept once."""
    message = item.message
    digest = hashlib.sha256(message.body).hexdigest()
    private_dir(folder)  # the state folder above it too, when this creates it
    for existing in read_quarantine(folder):
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
        "quarantinedAt": iso_z(moment),
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


def read_quarantine(folder: Path) -> Iterable[QuarantinedReceipt]:
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


def parse_iso(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def rewrite_quarantine(
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


def stored_message(entry: QuarantinedReceipt) -> IncomingMessage | None:
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
