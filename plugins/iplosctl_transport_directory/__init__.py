"""First-party plugin: an outbox folder for air-gapped sending or manual upload.

`settings.url` is a folder (a plain path or a file:// URL) that must exist:

* `send` writes `outbox/<to_queue>/<message_id>.p7m` (the body) and then
  `<message_id>.json` (every property, sorted keys). Each file is written to a
  temporary name, fsynced and renamed into place, and the `.json` comes last,
  so its presence means the pair is complete. Sending the same message id
  again with the same body does nothing; with a different body it fails,
  because a message id must never name two messages.
* `receive` reads `inbox/<queue>/*.json` in name order, each with the body
  file it names, and yields deliveries whose `accept` moves the pair to
  `inbox/<queue>/processed/` and whose `release` leaves it in place.

Whoever carries the files across (an upload tool, a person) writes received
messages into the inbox in the same format, `.json` last.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from iplosctl.atomic import fsync_dir, write_atomic
from iplosctl.errors import TransportError
from iplosctl.plugins import IncomingMessage, OutgoingMessage, TransportSettings

#: bumped when the .json layout changes incompatibly
FORMAT_VERSION = 1
BODY_SUFFIX = ".p7m"
META_SUFFIX = ".json"
PROCESSED = "processed"


def _folder(url: str) -> Path:
    if url.startswith("file:"):
        return Path(unquote(urlsplit(url).path))
    return Path(url).expanduser()


def _safe_name(value: str, what: str) -> str:
    """A queue name or message id becomes a path component: refuse anything that escapes."""
    if (
        not value
        or value in (".", "..")
        or value.startswith(".")
        or any(ch in value for ch in "/\\\0")
    ):
        raise TransportError(f"{what} {value!r} cannot be used as a file name")
    return value


def message_metadata(message: OutgoingMessage) -> dict[str, Any]:
    """Everything but the body, plus the body's file name, size and SHA-256."""
    return {
        "format_version": FORMAT_VERSION,
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "subject": message.subject,
        "to_queue": message.to_queue,
        "reply_to": message.reply_to,
        "content_type": message.content_type,
        "application_properties": dict(message.application_properties),
        "body_file": message.message_id + BODY_SUFFIX,
        "body_size": len(message.body),
        "body_sha256": hashlib.sha256(message.body).hexdigest(),
    }


def _dump(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


class DirectoryDelivery:
    """A message pair in the inbox; `accept` files it under `processed/`."""

    def __init__(self, message: IncomingMessage, meta: Path, body: Path | None) -> None:
        self.message = message
        self._meta = meta
        self._body = body
        self._settled: str | None = None

    def accept(self) -> None:
        """Move the pair to processed/: the .json first, so a crash leaves no complete pair."""
        if self._settled == "accepted":
            return
        if self._settled is not None:
            raise RuntimeError(f"delivery already {self._settled}, cannot accept it")
        done = self._meta.parent / PROCESSED
        try:
            done.mkdir(exist_ok=True)
            os.replace(self._meta, done / self._meta.name)
            if self._body is not None and self._body.exists():
                os.replace(self._body, done / self._body.name)
        except OSError as exc:
            raise TransportError(
                f"cannot move {self._meta} to {done}: {exc.strerror}; check the folder's "
                "permissions"
            ) from exc
        fsync_dir(self._meta.parent)
        fsync_dir(done)
        self._settled = "accepted"

    def release(self) -> None:
        """Leave the pair in the inbox for a later run."""
        if self._settled == "accepted":
            raise RuntimeError("delivery already accepted, cannot release it")
        self._settled = "released"

    def __repr__(self) -> str:
        return f"DirectoryDelivery({self._meta})"


class DirectoryTransport:
    """Writes messages to an outbox folder and reads receipts from an inbox folder."""

    name = "directory"

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings
        self.root = _folder(settings.url)

    def __repr__(self) -> str:
        return f"DirectoryTransport({str(self.root)!r})"

    def __enter__(self) -> DirectoryTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise TransportError(
                f"the transport folder {self.root} does not exist: create it or fix the "
                "endpoint URL"
            )

    def prepare(self, to_queue: str) -> None:
        """Check the folder exists, so a wrong URL fails at once, before any part is written."""
        self._check_root()

    def send(self, message: OutgoingMessage) -> None:
        """Write the body, then the .json; an existing identical message is left alone."""
        self._check_root()
        queue = _safe_name(message.to_queue, "queue name")
        message_id = _safe_name(message.message_id, "message id")
        folder = self.root / "outbox" / queue
        body_path = folder / (message_id + BODY_SUFFIX)
        meta_path = folder / (message_id + META_SUFFIX)
        if meta_path.exists():
            try:
                existing = body_path.read_bytes()
            except OSError:
                existing = None
            if existing == message.body:
                return
            raise TransportError(
                f"{meta_path} already holds message {message_id} with a different body: a "
                "message id must never be reused; remove the old pair only if it was never "
                "uploaded"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(body_path, message.body, mode=0o600)
            write_atomic(meta_path, _dump(message_metadata(message)), mode=0o600)
        except OSError as exc:
            raise TransportError(
                f"cannot write message {message_id} to {folder}: {exc.strerror}; check free "
                "space and the folder's permissions"
            ) from exc
        fsync_dir(folder)

    def receive(self, queue: str, *, timeout: float) -> Iterator[DirectoryDelivery]:
        """Yield what is in the inbox now, in name order; a folder does not wait for more.

        `timeout` is accepted for the Protocol and not used.
        """
        self._check_root()
        folder = self.root / "inbox" / _safe_name(queue, "queue name")
        if not folder.is_dir():
            return
        for meta in sorted(folder.glob("*" + META_SUFFIX)):
            if meta.name.startswith(".") or not meta.is_file():
                continue
            yield self._delivery(queue, meta)

    def find_accepted(self, queue: str, message_ids: Collection[str]) -> frozenset[str]:
        """Which of `message_ids` are in `outbox/<queue>/`: written, so possibly carried off.

        A body without its `.json` counts too (a send cut short may still be uploaded by
        a tool that does not wait for the pair). Issue 13: `attempt abandon --never-sent`.
        """
        self._check_root()
        folder = self.root / "outbox" / _safe_name(queue, "queue name")
        return frozenset(
            message_id
            for message_id in message_ids
            if (folder / (_safe_name(message_id, "message id") + META_SUFFIX)).exists()
            or (folder / (message_id + BODY_SUFFIX)).exists()
        )

    def close(self) -> None:
        """Nothing to close: every write is complete when `send` returns."""

    def _delivery(self, queue: str, meta: Path) -> DirectoryDelivery:
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise TransportError(
                f"{meta}: cannot read the message properties ({exc}); fix or remove the file"
            ) from exc
        body_name = str(data.get("body_file") or meta.stem + BODY_SUFFIX)
        body_file = meta.parent / _safe_name(body_name, "body file")
        body_path: Path | None = body_file
        try:
            body = body_file.read_bytes()
        except FileNotFoundError:
            if data.get("body_size", 0):
                raise TransportError(
                    f"{meta}: its body file {body_name} is missing; copy it into {meta.parent}"
                ) from None
            body, body_path = b"", None  # error-queue messages have no body (DOMAIN.md §5.7)
        except OSError as exc:
            raise TransportError(f"{body_file}: cannot read it ({exc.strerror})") from exc
        digest = data.get("body_sha256")
        if digest is not None and hashlib.sha256(body).hexdigest() != digest:
            raise TransportError(
                f"{meta}: the body file {body_name} does not match its body_sha256; copy it again"
            )
        raw = data.get("application_properties") or {}
        if not isinstance(raw, dict):
            raise TransportError(f"{meta}: application_properties must be a JSON object")

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        message = IncomingMessage(
            queue=queue,
            message_id=text("message_id"),
            correlation_id=text("correlation_id"),
            subject=text("subject"),
            body=body,
            application_properties={str(k): "" if v is None else str(v) for k, v in raw.items()},
        )
        return DirectoryDelivery(message, meta, body_path)
