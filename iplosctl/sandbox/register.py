"""The register's side of a submission, as the sandbox plays KPR: no transport in here.

`SandboxRegister.decide` takes one message as it arrived on the register's queue and says
what KPR would send back: an AppRec (DOMAIN.md §4) to the sender's reply queue, or an
empty error-queue message (DOMAIN.md §5.7) when the message cannot be processed at the
transport level. The peer (`peer.py`) and the broker consumer (`attach.py`) only move
these messages, so both behave the same.

What is checked, in the order a receiver can check it:

1. header properties (§5.3) and `toHerId` → error queue `transport:invalid-field-value`;
2. decryption → error queue `transport:invalid-certificate`;
3. signature, signer and chain → AppRec status 2 with `S01` (signature) or `S02`
   (certificate);
4. well-formed XML → `T01`; MsgHead (full schema with a schema dir, else `parse_msghead`)
   → `T02`; `fromHerId` against the MsgHead sender → error queue `abuse:spoofing-attack`;
   subject against the MsgHead type → error queue `transport:invalid-field-value`; another
   receiver → `E21`; a type other than KPR_IPL/KPR_IDE → `T10`;
5. the payload against export format v1 → `T02`; KPR's own checks per recipient: wrong
   check digits `E31`, missing id in KPR_IDE `E30`, any PersonId in the pseudonymous
   KPR_IPL `T99` (status 2); an H-number `E53` (status 3, a warning: accepted, but KPR
   cannot link it to Folkeregisteret).

A resend of a message already answered (same message id, DOMAIN.md §5.8) gets nothing.
Errors name a recipient by its position in the payload, never by its person id: the
receipt ends up in lockfiles and pull requests.

This module holds what needs the register's keys (steps 1-4, the replies); the verdict
types and the payload checks of step 5 are `verdict.py`, the misbehaviours
`behaviour.py`, the answered-id list `answered.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from iplosctl.errors import PayloadError
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.payload.apprec import STATUS_REJECTED, AppRecVersion, build_apprec
from iplosctl.payload.cms import (
    CmsError,
    Failure,
    PrivateKey,
    decrypt_then_verify,
    load_certificate,
    load_private_key,
    sign_then_encrypt,
)
from iplosctl.payload.msghead import load_schemas, parse_document, parse_msghead, validate_msghead
from iplosctl.plugins import IncomingMessage, OutgoingMessage
from iplosctl.sandbox.answered import SEEN_FILE, AnsweredIds
from iplosctl.sandbox.behaviour import BEHAVIOUR_HELP, Behaviour, parse_behaviour
from iplosctl.sandbox.pki import PkiFiles
from iplosctl.sandbox.verdict import (
    AppRecVerdict,
    ErrorVerdict,
    Original,
    Verdict,
    apprec_error,
    as_utc,
    check_payload,
    describe,
    from_msghead,
)

__all__ = [
    "BEHAVIOUR_HELP",
    "DEFAULT_NAME",
    "Answer",
    "Behaviour",
    "Reply",
    "SandboxRegister",
    "parse_behaviour",
]

log = logging.getLogger(__name__)

DEFAULT_NAME = "KPR sandbox"
#: the message types KPR-2023 takes (DOMAIN.md §3)
PART_TYPES = frozenset({"KPR_IPL", "KPR_IDE"})
#: header properties a receiver refuses to do without (DOMAIN.md §5.3, HNM ValidateMessageHeader)
REQUIRED_PROPERTIES = ("fromHerId", "toHerId", "applicationTimeStamp")
#: CMS failures that mean the signature, not the certificate, is wrong
_SIGNATURE_FAILURES = frozenset(
    {Failure.BAD_SIGNATURE, Failure.UNKNOWN_SIGNER, Failure.MALFORMED, Failure.UNSUPPORTED}
)
_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # applicationTimeStamp, `yyyy-MM-ddTHH:mm:ssK` in UTC


# --- what decide() returns ------------------------------------------------------------------


class Reply(tuple[str, OutgoingMessage]):
    """(queue, message), unpackable as a pair, plus `due`: when it may be delivered.

    `due` is None for "now"; with a delay behaviour the serving loop holds the reply
    until then (the peer persists it with its due time, so it survives a restart).
    """

    due: dt.datetime | None

    def __new__(cls, queue: str, message: OutgoingMessage, due: dt.datetime | None = None) -> Reply:
        self = super().__new__(cls, (queue, message))
        self.due = due
        return self

    @property
    def queue(self) -> str:
        return self[0]

    @property
    def message(self) -> OutgoingMessage:
        return self[1]

    def __repr__(self) -> str:
        return f"Reply({self.queue!r}, {self.message.subject!r}, due={self.due!r})"


@dataclass(frozen=True)
class Answer:
    """What the register does about one message; `remember` it once the replies are out."""

    replies: tuple[Reply, ...]
    #: the ids under which a resend will be recognised (AMQP message id, MsgHead MsgId)
    ids: tuple[str, ...]
    #: one line for logs: e.g. `apprec 2 E31`, `error-queue transport:invalid-certificate`
    outcome: str
    duplicate: bool = False


# --- the register ---------------------------------------------------------------------------


class SandboxRegister:
    """KPR's answering logic with its own keys; one instance per register HER-id."""

    def __init__(
        self,
        *,
        her_id: int | str,
        name: str = DEFAULT_NAME,
        signing_cert: x509.Certificate,
        signing_key: PrivateKey,
        encryption_cert: x509.Certificate,
        encryption_key: PrivateKey,
        municipality_signing_certs: Sequence[x509.Certificate],
        trust_anchors: Sequence[x509.Certificate],
        municipality_encryption: x509.Certificate | Mapping[str, x509.Certificate],
        behaviour: Behaviour | None = None,
        schema_dir: Path | None = None,
        state_dir: Path | None = None,
        apprec_version: AppRecVersion = "1.1",
    ) -> None:
        if not isinstance(encryption_key, rsa.RSAPrivateKey):
            raise PayloadError("the register's encryption key must be RSA (NHN encrypts to RSA)")
        self.her_id = str(her_id)
        self.name = name
        self.behaviour = behaviour or Behaviour()
        self.apprec_version: AppRecVersion = apprec_version
        self._signing_cert = signing_cert
        self._signing_key = signing_key
        self._encryption_cert = encryption_cert
        self._encryption_key = encryption_key
        self._signers = tuple(municipality_signing_certs)
        self._anchors = tuple(trust_anchors)
        self._encryption_for = municipality_encryption
        # Content is a strict wildcard: the payload XSD must be in the same schema set.
        self._msghead_schema = load_schemas(schema_dir, [EXPORT_V1_XSD]) if schema_dir else None
        self._seen = AnsweredIds(Path(state_dir) / SEEN_FILE if state_dir is not None else None)

    @classmethod
    def from_pki(
        cls,
        pki: PkiFiles,
        *,
        her_id: int | str,
        name: str = DEFAULT_NAME,
        behaviour: Behaviour | None = None,
        schema_dir: Path | None = None,
        state_dir: Path | None = None,
        municipality: tuple[x509.Certificate, x509.Certificate] | None = None,
    ) -> SandboxRegister:
        """The register of a `generate_pki` folder: trusts its municipality and CA only.

        `municipality` (signing, encryption certificate) replaces the test PKI's
        municipality: a rehearsal with the municipality's real certificates. The signing
        certificate is pinned as its own trust anchor, since the sandbox cannot know which
        CA the municipality's certificates come from.
        """
        ca = load_certificate(pki.ca)
        if municipality is None:
            signing = load_certificate(pki.certificate("municipality-signing"))
            encryption = load_certificate(pki.certificate("municipality-encryption"))
            anchors = [ca]
        else:
            signing, encryption = municipality
            anchors = [ca, signing]
        return cls(
            her_id=her_id,
            name=name,
            signing_cert=load_certificate(pki.certificate("register-signing")),
            signing_key=load_private_key(pki.key("register-signing"), None),
            encryption_cert=load_certificate(pki.certificate("register-encryption")),
            encryption_key=load_private_key(pki.key("register-encryption"), None),
            municipality_signing_certs=[signing],
            trust_anchors=anchors,
            municipality_encryption=encryption,
            behaviour=behaviour,
            schema_dir=schema_dir,
            state_dir=state_dir,
        )

    @property
    def queue(self) -> str:
        """The queue the register reads (DOMAIN.md §5.2)."""
        return f"{self.her_id}_async"

    # --- public API --------------------------------------------------------------------------

    def handle(self, message: IncomingMessage, now: dt.datetime) -> list[Reply]:
        """Decide and remember at once: for callers that need no crash-safety between the two."""
        answer = self.decide(message, now)
        self.remember(answer)
        return list(answer.replies)

    def decide(self, message: IncomingMessage, now: dt.datetime) -> Answer:
        """The replies to `message` (queue, message, due), without remembering it as answered.

        Call `remember` only after the replies are stored or sent: a message whose replies
        were lost comes back (it was not accepted) and must be answered then.
        """
        now = as_utc(now)
        ids = tuple(i for i in (message.message_id,) if i)
        if any(i in self._seen for i in ids):
            return Answer((), ids, "duplicate", duplicate=True)
        verdict = self._judge(message, now)
        if isinstance(verdict, AppRecVerdict) and verdict.original.msg_id:
            ids = tuple(dict.fromkeys((*ids, verdict.original.msg_id)))
            if verdict.original.msg_id in self._seen:
                return Answer((), ids, "duplicate", duplicate=True)
        verdict = self._apply_behaviour(verdict)
        replies = self._replies(message, verdict, now)
        outcome = describe(verdict)
        if self.behaviour.never_answer:
            replies, outcome = [], f"{outcome} (never-answer: not sent)"
        elif self.behaviour.answer_twice:
            replies = [r for r in replies for _ in range(2)]
        if self.behaviour.delay_seconds and replies:
            due = now + dt.timedelta(seconds=self.behaviour.delay_seconds)
            replies = [Reply(r.queue, r.message, due) for r in replies]
        log.info("message %s: %s", message.message_id, outcome)
        return Answer(tuple(replies), ids, outcome)

    def remember(self, answer: Answer) -> None:
        """Record `answer`'s ids as answered, so a resend of them gets nothing."""
        self._seen.add(answer.ids)

    def answered(self, message_id: str) -> bool:
        """Whether a message with this AMQP message id or MsgId was answered already."""
        return message_id in self._seen

    # --- judging ------------------------------------------------------------------------------

    def _judge(self, message: IncomingMessage, now: dt.datetime) -> Verdict:
        props = message.application_properties
        missing = [p for p in REQUIRED_PROPERTIES if not (props.get(p) or "").strip()]
        if not (message.subject or "").strip():
            missing.insert(0, "subject")
        if missing:
            return ErrorVerdict(
                "transport:invalid-field-value",
                f"the message lacks required header field(s): {', '.join(missing)}",
                tuple(missing),
            )
        from_her_id = props["fromHerId"].strip()
        if props["toHerId"].strip() != self.her_id:
            return ErrorVerdict(
                "transport:invalid-field-value",
                f"toHerId {props['toHerId'].strip()} is not this register's HER-id {self.her_id}",
                ("toHerId",),
            )
        original = Original(
            msg_id=message.message_id or "",
            msg_type=(message.subject or "").strip(),
            issue_date=_timestamp(props["applicationTimeStamp"], now),
            sender_her_ids=(from_her_id,),
        )
        try:
            content = decrypt_then_verify(
                message.body,
                own_cert=self._encryption_cert,
                own_key=self._encryption_key,
                sender_certs=self._signers,
                trust_anchors=self._anchors,
                now=now,
            )
        except CmsError as exc:
            if self._not_decryptable(exc, message.body):
                return ErrorVerdict("transport:invalid-certificate", exc.message)
            code = "S01" if exc.reason in _SIGNATURE_FAILURES else "S02"
            return AppRecVerdict(original, STATUS_REJECTED, (apprec_error(code, exc.message),))
        try:
            root = parse_document(content, "MsgHead")
        except PayloadError as exc:
            return AppRecVerdict(original, STATUS_REJECTED, (apprec_error("T01", exc.message),))
        try:
            if self._msghead_schema is not None:
                validate_msghead(content, self._msghead_schema)
            info = parse_msghead(content)
        except PayloadError as exc:
            return AppRecVerdict(original, STATUS_REJECTED, (apprec_error("T02", exc.message),))
        original = from_msghead(info, root)
        if from_her_id not in info.sender_her_ids:
            return ErrorVerdict(
                "abuse:spoofing-attack",
                f"fromHerId {from_her_id} is not a sender HER-id in the MsgHead "
                f"({', '.join(info.sender_her_ids)})",
                ("fromHerId",),
            )
        if original.msg_type != message.subject:
            return ErrorVerdict(
                "transport:invalid-field-value",
                f"subject {message.subject} does not match the MsgHead type {info.msg_type}",
                ("subject",),
            )
        if info.receiver_her_id != self.her_id:
            text = f"MsgHead receiver {info.receiver_her_id} is not this register ({self.her_id})"
            return AppRecVerdict(original, STATUS_REJECTED, (apprec_error("E21", text),))
        if info.msg_type not in PART_TYPES:
            text = f"message type {info.msg_type} is not one of {', '.join(sorted(PART_TYPES))}"
            return AppRecVerdict(original, STATUS_REJECTED, (apprec_error("T10", text),))
        return check_payload(original, info, quote_ids=self.behaviour.quote_ids)

    def _not_decryptable(self, exc: CmsError, blob: bytes) -> bool:
        """Whether `decrypt_then_verify` failed at decryption (error queue) or after it (AppRec).

        Malformed or unsupported CMS can happen on either layer; trying the decryption alone
        tells them apart without reading error texts.
        """
        if exc.reason in (Failure.NOT_FOR_US, Failure.WRONG_KEY):
            return True
        if exc.reason not in (Failure.MALFORMED, Failure.UNSUPPORTED):
            return False
        try:
            pkcs7.pkcs7_decrypt_der(blob, self._encryption_cert, self._encryption_key, [])
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return True
        return False

    def _apply_behaviour(self, verdict: Verdict) -> Verdict:
        if not isinstance(verdict, AppRecVerdict):
            return verdict
        if self.behaviour.error_queue_instead:
            said = "; ".join(e.original_text or "" for e in verdict.errors)
            return ErrorVerdict(
                "transport:internal-error",
                "the sandbox register sends an error-queue message instead of an AppRec "
                "(behaviour error-queue)" + (f": {said}" if self.behaviour.quote_ids else ""),
                (said,) if self.behaviour.quote_ids and said else (),
            )
        if self.behaviour.reject_all:
            text = "the sandbox register rejects every message (behaviour reject-all)"
            return replace(verdict, status=STATUS_REJECTED, errors=(apprec_error("X99", text),))
        return verdict

    # --- replies ------------------------------------------------------------------------------

    def _replies(self, message: IncomingMessage, verdict: Verdict, now: dt.datetime) -> list[Reply]:
        props = message.application_properties
        from_her_id = (props.get("fromHerId") or "").strip()
        stamp = now.strftime(_TIMESTAMP)
        if isinstance(verdict, AppRecVerdict):
            cert = self._municipality_encryption_cert(verdict.original, from_her_id)
            if cert is None:
                verdict = ErrorVerdict(
                    "transport:missing-certificate",
                    f"the sandbox register has no encryption certificate for HER-id "
                    f"{from_her_id}; it cannot send the AppRec",
                )
            else:
                return [self._apprec_reply(message, verdict, cert, from_her_id, now)]
        queue = _error_queue(from_her_id, _reply_to(message))
        if queue is None:
            log.warning(
                "message %s: %s, and no sender queue to report it to",
                message.message_id,
                verdict.condition,
            )
            return []
        properties = {
            "fromHerId": self.her_id,
            "toHerId": from_her_id,
            "applicationTimeStamp": stamp,
            "originalMessageId": message.message_id or "",
            "receiverTimeStamp": stamp,
            "errorCondition": verdict.condition,
            "errorDescription": verdict.description,
        }
        if verdict.data:
            properties["errorConditionData"] = ";".join(verdict.data)
        error_message = OutgoingMessage(
            message_id=str(uuid.uuid4()),
            correlation_id=message.message_id or "",
            subject=message.subject or "",
            body=b"",
            to_queue=queue,
            reply_to=self.queue,
            application_properties=properties,
            content_type="text/plain",
        )
        return [Reply(queue, error_message)]

    def _apprec_reply(
        self,
        message: IncomingMessage,
        verdict: AppRecVerdict,
        cert: x509.Certificate,
        from_her_id: str,
        now: dt.datetime,
    ) -> Reply:
        original = verdict.original
        apprec_id = str(uuid.uuid4())
        service = original.sender_her_ids[-1] if len(original.sender_her_ids) > 1 else None
        document = build_apprec(
            version=self.apprec_version,
            msg_id=apprec_id,
            gen_date=now,
            sender_name=self.name,
            sender_her_id=self.her_id,
            receiver_name=original.sender_name or f"HER-id {original.sender_her_ids[0]}",
            receiver_her_id=original.sender_her_ids[0],
            status=verdict.status,
            errors=verdict.errors,
            original_msg_type=original.msg_type,
            original_msg_id=original.msg_id,
            original_issue_date=original.issue_date,
            receiver_service_name=original.service_name if service else None,
            receiver_service_her_id=service,
        )
        body = sign_then_encrypt(
            document,
            signer_cert=self._signing_cert,
            signer_key=self._signing_key,
            recipient_cert=cert,
        )
        queue = _last_segment(_reply_to(message)) or f"{from_her_id}_async"
        apprec = OutgoingMessage(
            message_id=apprec_id,
            correlation_id=message.message_id or original.msg_id,
            subject="APPREC",
            body=body,
            to_queue=queue,
            reply_to=self.queue,
            application_properties={
                "fromHerId": self.her_id,
                "toHerId": from_her_id,
                "applicationTimeStamp": now.strftime(_TIMESTAMP),
            },
        )
        return Reply(queue, apprec)

    def _municipality_encryption_cert(
        self, original: Original, from_her_id: str
    ) -> x509.Certificate | None:
        if isinstance(self._encryption_for, x509.Certificate):
            return self._encryption_for
        for her_id in (from_her_id, *reversed(original.sender_her_ids)):
            cert = self._encryption_for.get(her_id)
            if cert is not None:
                return cert
        return None


# --- helpers --------------------------------------------------------------------------------


def _reply_to(message: IncomingMessage) -> str:
    """The message's reply-to; AppRecs go there, else to `{fromHerId}_async` (DOMAIN.md §5.2)."""
    return message.reply_to or ""


def _last_segment(address: str) -> str:
    """`sb.test.nhn.no/NS/123_async` or `/amq/queue/123_async` → `123_async` (HNM does the same)."""
    return address.rstrip("/").rsplit("/", 1)[-1].strip()


def _error_queue(from_her_id: str, reply_to: str) -> str | None:
    if from_her_id:
        return f"{from_her_id}_error"
    reply = _last_segment(reply_to)
    if reply.endswith("_async"):
        return reply[: -len("_async")] + "_error"
    return None


def _timestamp(value: str, fallback: dt.datetime) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return fallback
