"""The sandbox register's verdicts, without any transport: messages built here the way
`apply` builds them (MsgHead around an export v1 payload, signed, then encrypted).

The helpers at the top (`Municipality`, `open_apprec`) are shared with the peer and
attach tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iplosctl.errors import UsageError
from iplosctl.identifiers import person_control_digits
from iplosctl.payload.apprec import AppRec, parse_apprec
from iplosctl.payload.cms import (
    decrypt_then_verify,
    load_certificate,
    load_private_key,
    sign_then_encrypt,
)
from iplosctl.payload.export_writer import write_export
from iplosctl.payload.msghead import build_msghead
from iplosctl.plugins import IncomingMessage, OutgoingMessage
from iplosctl.records import ExportHeader, Recipient, Service
from iplosctl.sandbox.pki import PkiFiles, generate_pki
from iplosctl.sandbox.register import (
    Behaviour,
    Reply,
    SandboxRegister,
    parse_behaviour,
)
from tests.reference import XSD_DIR

NOW = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)
REGISTER = "8000100"
ORG_HER = "8000001"
SERVICE_HER = "8000002"
GOOD_ID = "05903813050"  # Test-Norge, right check digits
BAD_ID = "05903813051"  # last check digit wrong
# month + 40, right check digits; built here so no real-looking number is in the file
H_NUMBER = "014180101" + "".join(map(str, person_control_digits("014180101") or ()))
HEADER = ExportHeader("9999", 2023, "DemoEPJ", "1.0")


# --- shared helpers --------------------------------------------------------------------------


def payload(person_ids: list[str], msg_type: str) -> bytes:
    """An export v1 payload as apply sends it: KPR_IPL without PersonId, KPR_IDE ids only."""
    records = [
        Recipient(
            index=i,
            local_id=f"r-{i + 1:06d}",
            person_id=pid,
            services=(Service("21", start=dt.date(2023, 1, 1)),),
        )
        for i, pid in enumerate(person_ids)
    ]
    out = io.BytesIO()
    write_export(
        HEADER,
        records,
        out,
        include_person_ids=msg_type != "KPR_IPL",
        include_services=msg_type != "KPR_IDE",
    )
    return out.getvalue()


@dataclass
class Municipality:
    """The sending side of a test PKI, addressing `register_her_id` like apply does."""

    pki: PkiFiles
    register_her_id: str = REGISTER
    org_her_id: str = ORG_HER
    service_her_id: str = SERVICE_HER

    def msghead(self, content: bytes, *, msg_type: str, msg_id: str, **changes: Any) -> bytes:
        args: dict[str, Any] = {
            "msg_type": msg_type,
            "msg_type_dn": "IPLOS-rapportering til KPR",
            "msg_id": msg_id,
            "gen_date": NOW,
            "sender_org_name": "Demo kommune",
            "sender_org_number": "999999999",
            "sender_her_id": self.org_her_id,
            "sender_service_name": "Saksbehandling",
            "sender_service_her_id": self.service_her_id,
            "receiver_name": "KPR",
            "receiver_her_id": self.register_her_id,
            "payload": content,
        }
        args.update(changes)
        return build_msghead(**args)

    def protect(self, document: bytes, *, signer: PkiFiles | None = None) -> bytes:
        signer = signer or self.pki
        return sign_then_encrypt(
            document,
            signer_cert=load_certificate(signer.certificate("municipality-signing")),
            signer_key=load_private_key(signer.key("municipality-signing"), None),
            recipient_cert=load_certificate(self.pki.certificate("register-encryption")),
        )

    def outgoing(
        self,
        person_ids: list[str] | None = None,
        *,
        msg_type: str = "KPR_IDE",
        msg_id: str | None = None,
        body: bytes | None = None,
        content: bytes | None = None,
        properties: dict[str, str] | None = None,
    ) -> OutgoingMessage:
        """The OutgoingMessage apply sends for one part."""
        msg_id = msg_id or str(uuid.uuid4())
        if body is None:
            if content is None:
                content = payload(person_ids or [GOOD_ID], msg_type)
            body = self.protect(self.msghead(content, msg_type=msg_type, msg_id=msg_id))
        props = {
            "fromHerId": self.service_her_id,
            "toHerId": self.register_her_id,
            "applicationTimeStamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        props.update(properties or {})
        return OutgoingMessage(
            message_id=msg_id,
            correlation_id=msg_id,
            subject=msg_type,
            body=body,
            to_queue=f"{self.register_her_id}_async",
            reply_to=f"{self.service_her_id}_async",
            application_properties={k: v for k, v in props.items() if v is not None},
        )

    def incoming(self, *args: Any, **kwargs: Any) -> IncomingMessage:
        """The same message as the register's queue hands it over."""
        return as_incoming(self.outgoing(*args, **kwargs))


def as_incoming(message: OutgoingMessage) -> IncomingMessage:
    return IncomingMessage(
        queue=message.to_queue,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        subject=message.subject,
        body=message.body,
        application_properties=dict(message.application_properties),
    )


def open_apprec(body: bytes, pki: PkiFiles, now: dt.datetime = NOW) -> tuple[bytes, AppRec]:
    """Decrypt and verify an AppRec as the municipality does; (XML, parsed)."""
    xml = decrypt_then_verify(
        body,
        own_cert=load_certificate(pki.certificate("municipality-encryption")),
        own_key=load_private_key(pki.key("municipality-encryption"), None),
        sender_certs=[load_certificate(pki.certificate("register-signing"))],
        trust_anchors=[load_certificate(pki.ca)],
        now=now,
    )
    return xml, parse_apprec(xml)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return generate_pki(tmp_path_factory.mktemp("pki"), now=NOW)


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return generate_pki(tmp_path_factory.mktemp("other-pki"), now=NOW)


@pytest.fixture
def municipality(pki: PkiFiles) -> Municipality:
    return Municipality(pki)


def register(pki: PkiFiles, **options: Any) -> SandboxRegister:
    return SandboxRegister.from_pki(pki, her_id=REGISTER, name="KPR", **options)


def only_apprec(replies: list[Reply], pki: PkiFiles) -> tuple[Reply, bytes, AppRec]:
    assert len(replies) == 1, replies
    reply = replies[0]
    xml, apprec = open_apprec(reply.message.body, pki)
    return reply, xml, apprec


def only_error(replies: list[Reply]) -> OutgoingMessage:
    assert len(replies) == 1, replies
    queue, message = replies[0]
    assert queue == f"{SERVICE_HER}_error" == message.to_queue
    assert message.body == b""
    return message


# --- status 1 --------------------------------------------------------------------------------


@pytest.mark.parametrize("msg_type", ["KPR_IPL", "KPR_IDE"])
def test_a_good_part_is_accepted_with_status_1(
    pki: PkiFiles, municipality: Municipality, msg_type: str
) -> None:
    message = municipality.incoming([GOOD_ID, GOOD_ID], msg_type=msg_type)
    reply, xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)

    assert reply.queue == f"{SERVICE_HER}_async" == reply.message.to_queue
    assert reply.due is None
    out = reply.message
    assert out.subject == "APPREC"
    assert out.correlation_id == message.message_id
    assert out.message_id == apprec.msg_id
    assert dict(out.application_properties) == {
        "fromHerId": REGISTER,
        "toHerId": SERVICE_HER,
        "applicationTimeStamp": "2024-03-01T10:00:00Z",
    }
    assert (apprec.status, apprec.errors) == ("1", ())
    assert apprec.version == "1.1"
    assert (apprec.original_msg_id, apprec.original_msg_type) == (message.message_id, msg_type)
    assert apprec.sender_her_ids == (REGISTER,)
    assert apprec.receiver_her_ids == (ORG_HER, SERVICE_HER)
    schema = etree.XMLSchema(etree.parse(str(XSD_DIR / "apprec-v1.1.xsd")))
    schema.assertValid(etree.fromstring(xml))


def test_full_msghead_schema_validation_accepts_what_apply_sends(
    pki: PkiFiles, municipality: Municipality
) -> None:
    strict = register(pki, schema_dir=XSD_DIR)
    _reply, _xml, apprec = only_apprec(strict.handle(municipality.incoming(), NOW), pki)
    assert apprec.status == "1"


def test_the_reply_to_of_the_message_wins(pki: PkiFiles, municipality: Municipality) -> None:

    base = municipality.incoming()
    message = dataclasses.replace(base, reply_to="/amq/queue/7654321_async")
    reply, _xml, _apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert reply.queue == "7654321_async"


# --- the register's own checks ---------------------------------------------------------------


def test_wrong_check_digits_reject_with_e31_naming_the_record_not_the_person(
    pki: PkiFiles, municipality: Municipality
) -> None:
    message = municipality.incoming([GOOD_ID, BAD_ID, GOOD_ID])
    reply, xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert apprec.status == "2"
    assert [(e.code, e.system) for e in apprec.errors] == [("E31", "2.16.578.1.12.4.1.1.8221")]
    assert apprec.errors[0].original_text == "KPR_IDE Recipient 2: PersonId has wrong check digits"
    assert BAD_ID.encode() not in xml
    assert BAD_ID not in str(reply.message.application_properties)


def test_an_h_number_is_accepted_with_a_warning(pki: PkiFiles, municipality: Municipality) -> None:
    message = municipality.incoming([GOOD_ID, H_NUMBER])
    _reply, xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert apprec.status == "3"
    assert [e.code for e in apprec.errors] == ["E53"]
    assert "Recipient 2" in (apprec.errors[0].original_text or "")
    assert H_NUMBER.encode() not in xml


def test_a_person_id_in_the_pseudonymous_part_is_refused(
    pki: PkiFiles, municipality: Municipality
) -> None:
    content = payload([GOOD_ID], "KPR_IDE")  # carries PersonId
    message = municipality.incoming(msg_type="KPR_IPL", content=content)
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["T99"])


def test_many_bad_records_are_summarised(pki: PkiFiles, municipality: Municipality) -> None:
    message = municipality.incoming([BAD_ID] * 60)
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert len(apprec.errors) == 50
    assert apprec.errors[-1].code == "X99"
    assert "11 more" in (apprec.errors[-1].original_text or "")


def test_a_msghead_for_another_receiver_gets_e21(pki: PkiFiles, municipality: Municipality) -> None:
    msg_id = str(uuid.uuid4())
    head = municipality.msghead(
        payload([GOOD_ID], "KPR_IDE"), msg_type="KPR_IDE", msg_id=msg_id, receiver_her_id="1234"
    )
    message = municipality.incoming(msg_id=msg_id, body=municipality.protect(head))
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["E21"])


def test_an_unknown_message_type_gets_t10(pki: PkiFiles, municipality: Municipality) -> None:
    message = municipality.incoming(msg_type="KPR_XYZ", content=payload([GOOD_ID], "KPR_IPL"))
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["T10"])


# --- format and signature --------------------------------------------------------------------


def test_an_invalid_payload_gets_t02(pki: PkiFiles, municipality: Municipality) -> None:
    content = payload([GOOD_ID], "KPR_IDE").replace(b"<ReportingYear>", b"<Year>", 1)
    content = content.replace(b"</ReportingYear>", b"</Year>", 1)
    message = municipality.incoming(content=content)
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["T02"])
    assert "payload line" in (apprec.errors[0].original_text or "")


def test_an_unknown_payload_fails_the_full_schema_with_t02(
    pki: PkiFiles, municipality: Municipality
) -> None:
    message = municipality.incoming(content=b'<Other xmlns="urn:other"><x/></Other>')
    for reg in (register(pki), register(pki, schema_dir=XSD_DIR)):
        _reply, _xml, apprec = only_apprec(reg.handle(message, NOW), pki)
        assert [e.code for e in apprec.errors] == ["T02"]


def test_content_that_is_not_xml_gets_t01(pki: PkiFiles, municipality: Municipality) -> None:
    msg_id = str(uuid.uuid4())
    body = municipality.protect(b"this is not XML <")
    message = municipality.incoming(msg_id=msg_id, body=body)
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["T01"])
    # no MsgHead to read: the AMQP message id and subject identify the original
    assert (apprec.original_msg_id, apprec.original_msg_type) == (msg_id, "KPR_IDE")


def test_an_unknown_signer_gets_s01(
    pki: PkiFiles, other_pki: PkiFiles, municipality: Municipality
) -> None:
    msg_id = str(uuid.uuid4())
    head = municipality.msghead(payload([GOOD_ID], "KPR_IDE"), msg_type="KPR_IDE", msg_id=msg_id)
    body = municipality.protect(head, signer=other_pki)
    message = municipality.incoming(msg_id=msg_id, body=body)
    _reply, _xml, apprec = only_apprec(register(pki).handle(message, NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["S01"])
    assert apprec.original_msg_id == msg_id


def test_an_expired_signer_gets_s02(pki: PkiFiles, municipality: Municipality) -> None:
    message = municipality.incoming()
    later = NOW + dt.timedelta(days=3000)
    replies = register(pki).handle(message, later)
    assert len(replies) == 1
    _xml, apprec = open_apprec(replies[0].message.body, pki, now=NOW)
    assert [e.code for e in apprec.errors] == ["S02"]


# --- error queue -----------------------------------------------------------------------------


def test_a_message_encrypted_to_someone_else_goes_to_the_error_queue(
    pki: PkiFiles, other_pki: PkiFiles, municipality: Municipality
) -> None:
    stranger = Municipality(other_pki)  # encrypts to another register's certificate
    message = as_incoming(replace(stranger.outgoing(), message_id="m-1", correlation_id="m-1"))
    error = only_error(register(pki).handle(message, NOW))
    props = error.application_properties
    assert error.subject == "KPR_IDE"
    assert error.message_id != "m-1"
    uuid.UUID(error.message_id)
    assert props["originalMessageId"] == "m-1"
    assert props["errorCondition"] == "transport:invalid-certificate"
    assert props["errorDescription"]
    assert props["receiverTimeStamp"] == "2024-03-01T10:00:00Z"
    assert (props["fromHerId"], props["toHerId"]) == (REGISTER, SERVICE_HER)


def test_a_body_that_is_not_cms_goes_to_the_error_queue(
    pki: PkiFiles, municipality: Municipality
) -> None:
    message = municipality.incoming(body=b"<plain>not protected</plain>")
    error = only_error(register(pki).handle(message, NOW))
    assert error.application_properties["errorCondition"] == "transport:invalid-certificate"


def test_missing_header_fields_go_to_the_error_queue(
    pki: PkiFiles, municipality: Municipality
) -> None:
    out = municipality.outgoing()
    props = {k: v for k, v in out.application_properties.items() if k != "applicationTimeStamp"}
    message = as_incoming(replace(out, application_properties=props))
    error = only_error(register(pki).handle(message, NOW))
    assert error.application_properties["errorCondition"] == "transport:invalid-field-value"
    assert error.application_properties["errorConditionData"] == "applicationTimeStamp"


def test_a_sender_her_id_that_does_not_match_the_msghead_is_spoofing(
    pki: PkiFiles, municipality: Municipality
) -> None:
    message = municipality.incoming(properties={"fromHerId": "8000999"})
    replies = register(pki).handle(message, NOW)
    assert len(replies) == 1
    queue, error = replies[0]
    assert queue == "8000999_error"
    assert error.application_properties["errorCondition"] == "abuse:spoofing-attack"


def test_a_message_for_another_register_is_refused(
    pki: PkiFiles, municipality: Municipality
) -> None:
    message = municipality.incoming(properties={"toHerId": "1234567"})
    error = only_error(register(pki).handle(message, NOW))
    assert error.application_properties["errorCondition"] == "transport:invalid-field-value"


# --- duplicates ------------------------------------------------------------------------------


def test_a_resend_is_answered_once(pki: PkiFiles, municipality: Municipality) -> None:
    reg = register(pki)
    message = municipality.incoming()
    assert len(reg.handle(message, NOW)) == 1
    assert reg.handle(message, NOW) == []
    # the MsgId alone is enough to recognise it, whatever the AMQP id says
    assert reg.handle(replace(message, message_id="other-amqp-id"), NOW) == []


def test_answered_ids_survive_a_restart(
    pki: PkiFiles, municipality: Municipality, tmp_path: Path
) -> None:
    message = municipality.incoming()
    assert len(register(pki, state_dir=tmp_path).handle(message, NOW)) == 1
    assert register(pki, state_dir=tmp_path).handle(message, NOW) == []
    assert len(register(pki).handle(message, NOW)) == 1  # a register without state forgets


def test_a_decision_not_remembered_is_made_again(pki: PkiFiles, municipality: Municipality) -> None:
    reg = register(pki)
    message = municipality.incoming()
    first = reg.decide(message, NOW)
    again = reg.decide(message, NOW)  # the replies of `first` were never stored
    assert len(first.replies) == len(again.replies) == 1
    reg.remember(again)
    assert reg.decide(message, NOW).duplicate


# --- behaviours ------------------------------------------------------------------------------


def test_reject_all(pki: PkiFiles, municipality: Municipality) -> None:
    reg = register(pki, behaviour=Behaviour(reject_all=True))
    _reply, _xml, apprec = only_apprec(reg.handle(municipality.incoming(), NOW), pki)
    assert (apprec.status, [e.code for e in apprec.errors]) == ("2", ["X99"])


def test_error_queue_instead(pki: PkiFiles, municipality: Municipality) -> None:
    reg = register(pki, behaviour=Behaviour(error_queue_instead=True))
    message = municipality.incoming()
    error = only_error(reg.handle(message, NOW))
    assert error.application_properties["errorCondition"] == "transport:internal-error"
    assert error.application_properties["originalMessageId"] == message.message_id


def test_answer_twice_sends_the_same_apprec_twice(
    pki: PkiFiles, municipality: Municipality
) -> None:
    reg = register(pki, behaviour=Behaviour(answer_twice=True))
    replies = reg.handle(municipality.incoming(), NOW)
    assert len(replies) == 2
    assert replies[0].message == replies[1].message


def test_never_answer_sends_nothing_but_remembers(
    pki: PkiFiles, municipality: Municipality
) -> None:
    reg = register(pki, behaviour=Behaviour(never_answer=True))
    message = municipality.incoming()
    answer = reg.decide(message, NOW)
    assert answer.replies == ()
    reg.remember(answer)
    assert reg.answered(message.message_id or "")


def test_delay_holds_replies_until_they_are_due(pki: PkiFiles, municipality: Municipality) -> None:
    reg = register(pki, behaviour=Behaviour(delay_seconds=5))
    (reply,) = reg.handle(municipality.incoming(), NOW)
    assert reply.due == NOW + dt.timedelta(seconds=5)
    queue, message = reply  # still the (queue, message) pair handle() promises
    assert (queue, message.subject) == (f"{SERVICE_HER}_async", "APPREC")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", Behaviour()),
        ("normal", Behaviour()),
        ("reject-all", Behaviour(reject_all=True)),
        (" answer-twice , delay=2.5", Behaviour(answer_twice=True, delay_seconds=2.5)),
        ("never-answer,error-queue", Behaviour(never_answer=True, error_queue_instead=True)),
    ],
)
def test_parse_behaviour(spec: str, expected: Behaviour) -> None:
    assert parse_behaviour(spec) == expected
    assert parse_behaviour(expected.describe()) == expected


@pytest.mark.parametrize("spec", ["reject", "delay=soon", "delay=-1", "delay=nan"])
def test_parse_behaviour_refuses_unknown_words(spec: str) -> None:
    with pytest.raises(UsageError, match="behaviour"):
        parse_behaviour(spec)
