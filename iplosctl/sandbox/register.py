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
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from lxml import etree

from iplosctl.errors import IplosctlError, PayloadError, UsageError
from iplosctl.formats import EXPORT_V1_NAMESPACE, EXPORT_V1_XSD
from iplosctl.identifiers import PersonIdKind, has_valid_person_control_digits, person_id_kind
from iplosctl.payload.apprec import (
    ERROR_OID,
    STATUS_OK,
    STATUS_PARTLY_OK,
    STATUS_REJECTED,
    AppRecError,
    AppRecVersion,
    build_apprec,
)
from iplosctl.payload.cms import (
    CmsError,
    Failure,
    PrivateKey,
    decrypt_then_verify,
    load_certificate,
    load_private_key,
    sign_then_encrypt,
)
from iplosctl.payload.msghead import (
    MSGHEAD_NS,
    MsgHeadInfo,
    load_schemas,
    parse_document,
    parse_msghead,
    safe_parser,
    schema_reason,
    validate_msghead,
)
from iplosctl.plugins import IncomingMessage, OutgoingMessage
from iplosctl.sandbox.pki import PkiFiles

log = logging.getLogger(__name__)

DEFAULT_NAME = "KPR sandbox"
#: the message types KPR-2023 takes (DOMAIN.md §3)
PART_TYPES = frozenset({"KPR_IPL", "KPR_IDE"})
#: header properties a receiver refuses to do without (DOMAIN.md §5.3, HNM ValidateMessageHeader)
REQUIRED_PROPERTIES = ("fromHerId", "toHerId", "applicationTimeStamp")
#: where answered message ids are kept between runs (inside the state folder)
SEEN_FILE = "register-seen.json"
#: more errors than this in one AppRec are summarised in one last Error
MAX_ERRORS = 50
#: kodeverk 8221 texts for the codes the sandbox uses (DOMAIN.md §4)
ERROR_TEXTS = {
    "E21": "Mottaker finnes ikke",
    "E30": "Pasientens fødselsnummer mangler",
    "E31": "Pasientens fødselsnummer er feil",
    "E53": "Pasientens fødselsnummer eller D-nummer finnes ikke registrert i Folkeregisteret.",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "T99": "Annen feil på format",
    "X99": "Annen feil",
}
#: CMS failures that mean the signature, not the certificate, is wrong
_SIGNATURE_FAILURES = frozenset(
    {Failure.BAD_SIGNATURE, Failure.UNKNOWN_SIGNER, Failure.MALFORMED, Failure.UNSUPPORTED}
)
_X = f"{{{EXPORT_V1_NAMESPACE}}}"
_M = f"{{{MSGHEAD_NS}}}"
_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # applicationTimeStamp, `yyyy-MM-ddTHH:mm:ssK` in UTC


# --- behaviours -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """How the sandbox misbehaves on purpose, for tests and rehearsals of the unhappy paths."""

    delay_seconds: float = 0
    never_answer: bool = False
    answer_twice: bool = False
    reject_all: bool = False
    error_queue_instead: bool = False
    #: quote the person id an error is about in DN, OT and error-queue descriptions, as a
    #: register's free text may, written `DDMMYY.NNNNN` (tests the one scrubber, issue 12)
    quote_ids: bool = False

    def describe(self) -> str:
        """The same words `parse_behaviour` reads, e.g. `answer-twice,delay=5`."""
        words = [
            name
            for name, on in (
                ("reject-all", self.reject_all),
                ("never-answer", self.never_answer),
                ("answer-twice", self.answer_twice),
                ("error-queue", self.error_queue_instead),
                ("quote-ids", self.quote_ids),
            )
            if on
        ]
        if self.delay_seconds:
            words.append(f"delay={self.delay_seconds:g}")
        return ",".join(words) or "normal"


_FLAGS = {
    "reject-all": "reject_all",
    "never-answer": "never_answer",
    "answer-twice": "answer_twice",
    "error-queue": "error_queue_instead",
    "quote-ids": "quote_ids",
}
BEHAVIOUR_HELP = (
    "comma-separated: normal, reject-all, never-answer, answer-twice, error-queue, quote-ids, "
    "delay=SECONDS"
)


def parse_behaviour(spec: str | None) -> Behaviour:
    """`"answer-twice,delay=5"` → Behaviour; UsageError naming the word it does not know."""
    behaviour = Behaviour()
    for raw in (spec or "").split(","):
        word = raw.strip().lower()
        if word in ("", "normal"):
            continue
        if word in _FLAGS:
            behaviour = replace(behaviour, **{_FLAGS[word]: True})
            continue
        name, _, value = word.partition("=")
        if name == "delay":
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < 86400:  # also refuses nan
                raise UsageError(f"sandbox behaviour {raw.strip()!r}: delay must be 0 to 86399 s")
            behaviour = replace(behaviour, delay_seconds=seconds)
            continue
        raise UsageError(f"unknown sandbox behaviour {raw.strip()!r}: use {BEHAVIOUR_HELP}")
    return behaviour


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


@dataclass(frozen=True)
class _Original:
    """The message being answered, as far as it could be read."""

    msg_id: str
    msg_type: str
    issue_date: dt.datetime
    #: the sender's HER-ids, virksomhet first, service last
    sender_her_ids: tuple[str, ...]
    sender_name: str | None = None
    service_name: str | None = None


@dataclass(frozen=True)
class _AppRecVerdict:
    original: _Original
    status: str
    errors: tuple[AppRecError, ...] = ()


@dataclass(frozen=True)
class _ErrorVerdict:
    condition: str
    description: str
    data: tuple[str, ...] = ()


_Verdict = _AppRecVerdict | _ErrorVerdict


def _error(code: str, original_text: str) -> AppRecError:
    return AppRecError(
        code=code, system=ERROR_OID, text=ERROR_TEXTS[code], original_text=original_text
    )


def _utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


@cache
def _export_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(EXPORT_V1_XSD), parser=safe_parser()))


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
        self._seen_path = Path(state_dir) / SEEN_FILE if state_dir is not None else None
        self._seen: set[str] = self._load_seen()

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
        now = _utc(now)
        ids = tuple(i for i in (message.message_id,) if i)
        if any(i in self._seen for i in ids):
            return Answer((), ids, "duplicate", duplicate=True)
        verdict = self._judge(message, now)
        if isinstance(verdict, _AppRecVerdict) and verdict.original.msg_id:
            ids = tuple(dict.fromkeys((*ids, verdict.original.msg_id)))
            if verdict.original.msg_id in self._seen:
                return Answer((), ids, "duplicate", duplicate=True)
        verdict = self._apply_behaviour(verdict)
        replies = self._replies(message, verdict, now)
        outcome = _describe(verdict)
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
        new = [i for i in answer.ids if i not in self._seen]
        if not new:
            return
        self._seen.update(new)
        if self._seen_path is not None:
            self._save_seen()

    def answered(self, message_id: str) -> bool:
        """Whether a message with this AMQP message id or MsgId was answered already."""
        return message_id in self._seen

    # --- judging ------------------------------------------------------------------------------

    def _judge(self, message: IncomingMessage, now: dt.datetime) -> _Verdict:
        props = message.application_properties
        missing = [p for p in REQUIRED_PROPERTIES if not (props.get(p) or "").strip()]
        if not (message.subject or "").strip():
            missing.insert(0, "subject")
        if missing:
            return _ErrorVerdict(
                "transport:invalid-field-value",
                f"the message lacks required header field(s): {', '.join(missing)}",
                tuple(missing),
            )
        from_her_id = props["fromHerId"].strip()
        if props["toHerId"].strip() != self.her_id:
            return _ErrorVerdict(
                "transport:invalid-field-value",
                f"toHerId {props['toHerId'].strip()} is not this register's HER-id {self.her_id}",
                ("toHerId",),
            )
        original = _Original(
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
                return _ErrorVerdict("transport:invalid-certificate", exc.message)
            code = "S01" if exc.reason in _SIGNATURE_FAILURES else "S02"
            return _AppRecVerdict(original, STATUS_REJECTED, (_error(code, exc.message),))
        try:
            root = parse_document(content, "MsgHead")
        except PayloadError as exc:
            return _AppRecVerdict(original, STATUS_REJECTED, (_error("T01", exc.message),))
        try:
            if self._msghead_schema is not None:
                validate_msghead(content, self._msghead_schema)
            info = parse_msghead(content)
        except PayloadError as exc:
            return _AppRecVerdict(original, STATUS_REJECTED, (_error("T02", exc.message),))
        original = _from_msghead(info, root)
        if from_her_id not in info.sender_her_ids:
            return _ErrorVerdict(
                "abuse:spoofing-attack",
                f"fromHerId {from_her_id} is not a sender HER-id in the MsgHead "
                f"({', '.join(info.sender_her_ids)})",
                ("fromHerId",),
            )
        if original.msg_type != message.subject:
            return _ErrorVerdict(
                "transport:invalid-field-value",
                f"subject {message.subject} does not match the MsgHead type {info.msg_type}",
                ("subject",),
            )
        if info.receiver_her_id != self.her_id:
            text = f"MsgHead receiver {info.receiver_her_id} is not this register ({self.her_id})"
            return _AppRecVerdict(original, STATUS_REJECTED, (_error("E21", text),))
        if info.msg_type not in PART_TYPES:
            text = f"message type {info.msg_type} is not one of {', '.join(sorted(PART_TYPES))}"
            return _AppRecVerdict(original, STATUS_REJECTED, (_error("T10", text),))
        return self._check_payload(original, info)

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

    def _check_payload(self, original: _Original, info: MsgHeadInfo) -> _Verdict:
        """Export format v1, then KPR's own checks of each recipient."""
        try:
            root = parse_document(info.payload, "payload")
        except PayloadError as exc:
            return _AppRecVerdict(original, STATUS_REJECTED, (_error("T02", exc.message),))
        schema = _export_schema()
        if not schema.validate(root.getroottree()):
            first = schema.error_log[0]
            text = f"payload line {first.line}: {schema_reason(first.message)}"
            return _AppRecVerdict(original, STATUS_REJECTED, (_error("T02", text),))
        errors: list[AppRecError] = []
        warnings: list[AppRecError] = []
        for index, recipient in enumerate(root.iterfind(_X + "Recipient"), start=1):
            where = f"{info.msg_type} Recipient {index}"
            person_id = recipient.findtext(_X + "PersonId")
            if person_id is None:
                if info.msg_type == "KPR_IDE":
                    errors.append(_error("E30", f"{where}: PersonId is missing"))
                continue
            person_id = person_id.strip()
            if info.msg_type == "KPR_IPL":
                # The fagmelding is pseudonymous; identity travels only in KPR_IDE.
                errors.append(_error("T99", f"{where}: KPR_IPL must not carry PersonId"))
            elif not has_valid_person_control_digits(person_id):
                error = _error("E31", f"{where}: PersonId has wrong check digits")
                if self.behaviour.quote_ids:
                    quoted = f"{person_id[:6]}.{person_id[6:]}"
                    error = replace(
                        error,
                        text=f"{error.text} ({quoted})",
                        original_text=f"{where}: PersonId {quoted} has wrong check digits",
                    )
                errors.append(error)
            elif person_id_kind(person_id) is PersonIdKind.HNR:
                warnings.append(
                    _error("E53", f"{where}: H-number, not a fødselsnummer or D-number")
                )
        if errors:
            return _AppRecVerdict(original, STATUS_REJECTED, _capped([*errors, *warnings]))
        if warnings:
            return _AppRecVerdict(original, STATUS_PARTLY_OK, _capped(warnings))
        return _AppRecVerdict(original, STATUS_OK)

    def _apply_behaviour(self, verdict: _Verdict) -> _Verdict:
        if not isinstance(verdict, _AppRecVerdict):
            return verdict
        if self.behaviour.error_queue_instead:
            said = "; ".join(e.original_text or "" for e in verdict.errors)
            return _ErrorVerdict(
                "transport:internal-error",
                "the sandbox register sends an error-queue message instead of an AppRec "
                "(behaviour error-queue)" + (f": {said}" if self.behaviour.quote_ids else ""),
                (said,) if self.behaviour.quote_ids and said else (),
            )
        if self.behaviour.reject_all:
            text = "the sandbox register rejects every message (behaviour reject-all)"
            return replace(verdict, status=STATUS_REJECTED, errors=(_error("X99", text),))
        return verdict

    # --- replies ------------------------------------------------------------------------------

    def _replies(
        self, message: IncomingMessage, verdict: _Verdict, now: dt.datetime
    ) -> list[Reply]:
        props = message.application_properties
        from_her_id = (props.get("fromHerId") or "").strip()
        stamp = now.strftime(_TIMESTAMP)
        if isinstance(verdict, _AppRecVerdict):
            cert = self._municipality_encryption_cert(verdict.original, from_her_id)
            if cert is None:
                verdict = _ErrorVerdict(
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
        verdict: _AppRecVerdict,
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
        self, original: _Original, from_her_id: str
    ) -> x509.Certificate | None:
        if isinstance(self._encryption_for, x509.Certificate):
            return self._encryption_for
        for her_id in (from_her_id, *reversed(original.sender_her_ids)):
            cert = self._encryption_for.get(her_id)
            if cert is not None:
                return cert
        return None

    # --- seen ids -----------------------------------------------------------------------------

    def _load_seen(self) -> set[str]:
        path = self._seen_path
        if path is None or not path.exists():
            return set()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != 1:
                raise ValueError("unknown version")
            return {str(i) for i in data["ids"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IplosctlError(
                f"{path}: cannot read the sandbox register's answered-message list "
                f"({type(exc).__name__}); delete the file to start afresh"
            ) from None

    def _save_seen(self) -> None:
        path = self._seen_path
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            json.dumps({"version": 1, "ids": sorted(self._seen)}, indent=0) + "\n",
            encoding="utf-8",
        )
        # temp file + replace: a ^C mid-write must not leave a half list behind
        os.replace(tmp, path)


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


def _from_msghead(info: MsgHeadInfo, root: etree._Element) -> _Original:
    org = root.find(f"{_M}MsgInfo/{_M}Sender/{_M}Organisation")
    name = org.findtext(_M + "OrganisationName") if org is not None else None
    service = org.find(_M + "Organisation") if org is not None else None
    service_name = service.findtext(_M + "OrganisationName") if service is not None else None
    return _Original(
        msg_id=info.msg_id,
        msg_type=info.msg_type,
        issue_date=info.gen_date,
        sender_her_ids=info.sender_her_ids,
        sender_name=name.strip() if name else None,
        service_name=service_name.strip() if service_name else None,
    )


def _capped(errors: Iterable[AppRecError]) -> tuple[AppRecError, ...]:
    errors = list(errors)
    if len(errors) <= MAX_ERRORS:
        return tuple(errors)
    rest = len(errors) - (MAX_ERRORS - 1)
    summary = _error("X99", f"and {rest} more errors of the kinds above; fix those and resend")
    return (*errors[: MAX_ERRORS - 1], summary)


def _describe(verdict: _Verdict) -> str:
    if isinstance(verdict, _ErrorVerdict):
        return f"error-queue {verdict.condition}"
    codes = sorted({e.code or "?" for e in verdict.errors})
    return " ".join(["apprec", verdict.status, *codes])
