"""MsgHead v1.2: what we emit validates against the KITH XSD with our payload XSD loaded,
reads back, is deterministic, and schema errors never echo a person's data."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.payload import msghead
from iplosctl.payload.msghead import (
    MSGHEAD_NS,
    build_msghead,
    load_schemas,
    message_id,
    parse_msghead,
    validate_msghead,
)

REPO = Path(__file__).resolve().parents[1]
from tests.reference import XSD_DIR  # noqa: E402

EXPORT_XSD = REPO / "iplosctl" / "formats" / "iplos-export-v1.xsd"
DEMO_EXPORT = REPO / "examples" / "exports" / "demo-2023.xml"
MH = f"{{{MSGHEAD_NS}}}"

PAYLOAD = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment outside the root is not part of the payload -->
<IplosExport xmlns="urn:iplosctl:export:v1" version="1">
  <Header>
    <Municipality>9999</Municipality>
    <ReportingYear>2023</ReportingYear>
    <Epj><System>DemoEPJ</System><Version>1</Version></Epj>
  </Header>
  <Recipient>
    <LocalId>r-1</LocalId>
    <PersonId>PERSONID_SLOT</PersonId>
  </Recipient>
</IplosExport>
"""


def _payload(person_id: str = "05903813050") -> bytes:
    return PAYLOAD.replace(b"PERSONID_SLOT", person_id.encode())


def _canonical(xml: bytes) -> str:
    """C14N 2.0 of the root element only (comments and declaration outside it dropped)."""
    return etree.canonicalize(
        xml_data=etree.tostring(etree.fromstring(xml), encoding=str), with_comments=True
    )


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return load_schemas(XSD_DIR, [EXPORT_XSD])


def _args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "msg_type": "KPR_IPL",
        "msg_type_dn": "IPLOS-rapportering til KPR",
        "msg_id": "3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f",
        "gen_date": dt.datetime(2024, 2, 1, 9, 30, tzinfo=dt.UTC),
        "sender_org_name": "Bø kommune",
        "sender_org_number": "999999999",
        "sender_her_id": "8000001",
        "sender_service_name": "Saksbehandling",
        "sender_service_her_id": "8000002",
        "receiver_name": "KPR",
        "receiver_her_id": "8000100",
        "payload": _payload(),
    }
    args.update(overrides)
    return args


# --- building and validating ----------------------------------------------------------------


def test_demo_export_in_msghead_validates(schema: etree.XMLSchema) -> None:
    xml = build_msghead(**_args(payload=DEMO_EXPORT.read_bytes()))
    validate_msghead(xml, schema)
    content = etree.fromstring(xml).find(f"{MH}Document/{MH}RefDoc/{MH}Content")
    assert content is not None
    (root,) = list(content)
    assert _canonical(etree.tostring(root)) == _canonical(DEMO_EXPORT.read_bytes())


@pytest.mark.parametrize("msg_type", ["KPR_IPL", "KPR_IDE"])
def test_every_part_type_validates(schema: etree.XMLSchema, msg_type: str) -> None:
    validate_msghead(build_msghead(**_args(msg_type=msg_type)), schema)


def test_envelope_fields(schema: etree.XMLSchema) -> None:
    xml = build_msghead(**_args())
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<MsgHead ')
    assert "Bø kommune".encode() in xml  # UTF-8, not a character reference
    root = etree.fromstring(xml)
    info = root.find(MH + "MsgInfo")
    assert info is not None
    assert info.find(MH + "Type").attrib == {"V": "KPR_IPL", "DN": "IPLOS-rapportering til KPR"}
    assert info.findtext(MH + "MIGversion") == "v1.2 2006-05-24"
    assert info.findtext(MH + "GenDate") == "2024-02-01T09:30:00Z"
    assert info.find(MH + "Ack").attrib == {"V": "J", "DN": "Ja"}
    org = info.find(f"{MH}Sender/{MH}Organisation")
    idents = {
        i.find(MH + "TypeId").get("V"): (i.findtext(MH + "Id"), i.find(MH + "TypeId").get("S"))
        for i in org.findall(MH + "Ident")
    }
    assert idents == {
        "ENH": ("999999999", "2.16.578.1.12.4.1.1.9051"),
        "HER": ("8000001", "2.16.578.1.12.4.1.1.9051"),
    }
    service = org.find(MH + "Organisation")
    assert service.findtext(MH + "OrganisationName") == "Saksbehandling"
    assert service.findtext(f"{MH}Ident/{MH}Id") == "8000002"
    receiver = info.find(f"{MH}Receiver/{MH}Organisation")
    assert receiver.findtext(f"{MH}Ident/{MH}Id") == "8000100"
    assert receiver.find(f"{MH}Ident/{MH}TypeId").get("V") == "HER"
    refdoc = root.find(f"{MH}Document/{MH}RefDoc")
    assert refdoc.find(MH + "MsgType").attrib == {"V": "XML", "DN": "XML-instans"}


def test_output_is_deterministic_and_follows_inputs() -> None:
    assert build_msghead(**_args()) == build_msghead(**_args())
    assert build_msghead(**_args()) != build_msghead(**_args(msg_id="other"))


def test_gen_date_keeps_its_offset() -> None:
    oslo = dt.timezone(dt.timedelta(hours=1))
    xml = build_msghead(**_args(gen_date=dt.datetime(2024, 2, 1, 10, 30, 5, 999, tzinfo=oslo)))
    assert b"<GenDate>2024-02-01T10:30:05+01:00</GenDate>" in xml
    with pytest.raises(ValueError, match="timezone"):
        build_msghead(**_args(gen_date=dt.datetime(2024, 2, 1)))


def test_schema_error_names_line_and_hides_values(schema: etree.XMLSchema) -> None:
    secret = "O'Brien'4711"
    xml = build_msghead(**_args(payload=_payload(secret)))
    line = next(n for n, text in enumerate(xml.splitlines(), 1) if b"<PersonId>" in text)
    with pytest.raises(PayloadError) as info:
        validate_msghead(xml, schema)
    message = info.value.message
    assert message.startswith(f"MsgHead line {line}: ")
    assert "PersonId" in message and "pattern" in message
    assert "4711" not in message and "Brien" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Element '{urn:x}PersonId': [facet 'pattern'] The value '0101701234' is not "
            "accepted by the pattern '[0-9]{11}'.",
            "Element '{urn:x}PersonId': [facet 'pattern'] the value is not accepted by the "
            "pattern '[0-9]{11}'.",
        ),
        (
            "Element '{urn:x}From': '31.12.2023' is not a valid value of the atomic type "
            "'xs:date'.",
            "Element '{urn:x}From': the value is not a valid value of the atomic type 'xs:date'.",
        ),
        (
            "Element '{urn:x}Service', attribute 'code': [facet 'pattern'] The value 'a b' is "
            "not accepted by the pattern '[0-9A-Za-z._-]{1,20}'.",
            "Element '{urn:x}Service', attribute 'code': [facet 'pattern'] the value is not "
            "accepted by the pattern '[0-9A-Za-z._-]{1,20}'.",
        ),
        (
            "Element '{urn:x}HoursPerWeek': [facet 'fractionDigits'] The value '1.234' has "
            "more fractional digits than are allowed ('2').",
            "Element '{urn:x}HoursPerWeek': [facet 'fractionDigits'] the value has more "
            "fractional digits than are allowed ('2').",
        ),
        (
            "Element '{urn:x}Name': [facet 'maxLength'] The value 'Kari Nordmann' has a length "
            "of '13'; this exceeds the allowed maximum length of '5'.",
            "Element '{urn:x}Name': [facet 'maxLength'] the value this exceeds the allowed "
            "maximum length of '5'.",
        ),
        (
            "Element '{urn:x}Recipient': This element is not expected. Expected is "
            "( {urn:x}Header ).",
            "Element '{urn:x}Recipient': This element is not expected. Expected is "
            "( {urn:x}Header ).",
        ),
        (
            "Element '{urn:x}LocalId': Duplicate key-sequence ['r-17'] in unique "
            "identity-constraint 'local'.",
            "Element '{urn:x}LocalId': Duplicate key-sequence […] in unique "
            "identity-constraint 'local'.",
        ),
    ],
    ids=["pattern", "datatype", "attribute", "digits", "length", "structure", "key"],
)
def test_schema_reason_keeps_schema_text_and_drops_values(message: str, expected: str) -> None:
    assert msghead.schema_reason(message) == expected


def test_envelope_error_is_reported(schema: etree.XMLSchema) -> None:
    xml = build_msghead(**_args()).replace(b"<MIGversion>v1.2 2006-05-24</MIGversion>", b"")
    with pytest.raises(PayloadError, match=r"MsgHead line \d+: .*GenDate"):
        validate_msghead(xml, schema)


def test_payload_namespace_needs_its_schema() -> None:
    """Content is a strict wildcard: without the payload XSD nothing validates."""
    with pytest.raises(PayloadError, match="IplosExport"):
        validate_msghead(build_msghead(**_args()), load_schemas(XSD_DIR, []))


def test_unknown_payload_root_is_refused(schema: etree.XMLSchema) -> None:
    xml = build_msghead(**_args(payload=b"<Other xmlns='urn:x'/>"))
    with pytest.raises(PayloadError, match="does not match the schema"):
        validate_msghead(xml, schema)


@pytest.mark.parametrize(
    "payload",
    [b"<IplosExport", b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>', b"\xff\xfe<x/>"],
    ids=["not-well-formed", "doctype", "bad-encoding"],
)
def test_bad_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        build_msghead(**_args(payload=payload))
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"<IplosExport xmlns='urn:x'><Header/>", "not closed at the end"),
        (b"<IplosExport xmlns='urn:x'><Header/></IplosExportX>", "not closed at the end"),
        (b"<x:Root xmlns:x='urn:x'><Child/></x:Root>", "no default namespace"),
        (b"<Root><Child/></Root>", "no default namespace"),
        (b"<?xml version='1.0' encoding='ISO-8859-1'?>\n<R xmlns='urn:x'/>", "not UTF-8"),
        (b"<R xmlns='urn:x'>\xe6\xff</R>", "not valid UTF-8 at byte 17"),
        (b"  text before <R xmlns='urn:x'/>", "does not start with an element"),
    ],
)
def test_payload_checks_name_the_problem(payload: bytes, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        build_msghead(**_args(payload=payload))


def test_payload_root_is_spliced_byte_for_byte() -> None:
    """What the writer produced is what is signed: no re-serialisation on the way."""
    root = "<IplosExport xmlns='urn:iplosctl:export:v1' version='1'>\n  <Header>Ø</Header>\n"
    root += "</IplosExport >"
    payload = b"\xef\xbb\xbf<?xml version='1.0' encoding='utf-8'?>\n<!-- before -->\n"
    payload += root.encode() + b"\n<!-- after -->\n<?pi after?>\n"
    xml = build_msghead(**_args(payload=payload))
    assert xml.count(root.encode()) == 1
    assert b"before" not in xml and b"after" not in xml
    assert b"<Content>" + root.encode() + b"</Content>" in xml
    empty = build_msghead(**_args(payload=b"<R xmlns='urn:x' />"))
    assert b"<Content><R xmlns='urn:x' /></Content>" in empty


def test_not_well_formed_msghead(schema: etree.XMLSchema) -> None:
    with pytest.raises(PayloadError, match="not well-formed XML: line 3: Premature end"):
        validate_msghead(b"<?xml version='1.0'?>\n<MsgHead>\n", schema)


# --- schemas --------------------------------------------------------------------------------


def test_schema_dir_without_msghead(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match=r"MsgHead-v1_2\.xsd not found"):
        load_schemas(tmp_path, [EXPORT_XSD])


def test_schemas_never_use_the_network(tmp_path: Path) -> None:
    xsd = tmp_path / "remote.xsd"
    xsd.write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:r">'
        '<xs:import namespace="urn:elsewhere" schemaLocation="http://schemas.invalid/e.xsd"/>'
        "</xs:schema>"
    )
    with pytest.raises(PayloadError, match=r"http://schemas\.invalid/e\.xsd.*offline"):
        load_schemas(XSD_DIR, [xsd])


def test_payload_xsd_without_target_namespace(tmp_path: Path) -> None:
    xsd = tmp_path / "plain.xsd"
    xsd.write_text('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>')
    with pytest.raises(PayloadError, match="targetNamespace"):
        load_schemas(XSD_DIR, [xsd])


# --- reading --------------------------------------------------------------------------------


def test_parse_reads_back_what_build_wrote() -> None:
    info = parse_msghead(build_msghead(**_args()))
    assert info.msg_type == "KPR_IPL"
    assert info.msg_id == "3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f"
    assert info.gen_date == dt.datetime(2024, 2, 1, 9, 30, tzinfo=dt.UTC)
    assert info.ack_requested
    assert info.sender_her_ids == ("8000001", "8000002")
    assert info.sender_her_id == "8000002"
    assert info.receiver_her_ids == ("8000100",)
    assert info.receiver_her_id == "8000100"
    assert info.payload.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<IplosExport ')
    assert MSGHEAD_NS.encode() not in info.payload  # only the payload's own namespace
    assert _canonical(info.payload) == _canonical(_payload())


def test_parsed_payload_validates_on_its_own() -> None:
    info = parse_msghead(build_msghead(**_args(payload=DEMO_EXPORT.read_bytes())))
    export_schema = etree.XMLSchema(etree.parse(str(EXPORT_XSD)))
    assert export_schema.validate(etree.fromstring(info.payload))


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        (b"<AppRec xmlns='http://www.kith.no/xmlstds/apprec/2012-02-15'/>", "expected MsgHead"),
        (f"<MsgHead xmlns='{MSGHEAD_NS}'/>".encode(), "no MsgInfo"),
        (b"<!DOCTYPE MsgHead SYSTEM 'file:///etc/passwd'><MsgHead/>", "DOCTYPE"),
    ],
)
def test_parse_refuses(xml: bytes, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        parse_msghead(xml)


def test_parse_needs_her_ids_and_one_content() -> None:
    xml = build_msghead(**_args())
    without_receiver_her = xml.replace(b"<Id>8000100</Id>", b"<Id></Id>")
    with pytest.raises(PayloadError, match="Receiver has no HER-id"):
        parse_msghead(without_receiver_her)
    bad_date = xml.replace(b"2024-02-01T09:30:00Z", b"1. februar 2024")
    with pytest.raises(PayloadError, match="GenDate"):
        parse_msghead(bad_date)
    without_id = xml.replace(b"<MsgId>3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f</MsgId>", b"")
    with pytest.raises(PayloadError, match="MsgInfo/MsgId"):
        parse_msghead(without_id)
    empty_content = etree.fromstring(xml)
    content = empty_content.find(f"{MH}Document/{MH}RefDoc/{MH}Content")
    for child in list(content):
        content.remove(child)
    with pytest.raises(PayloadError, match="Content holds 0 elements"):
        parse_msghead(etree.tostring(empty_content))


# --- message ids ----------------------------------------------------------------------------

BASE = ("9999-2023", 1, "KPR_IPL", "sha256:" + "ab" * 32)


def test_message_id_is_a_stable_uuid5() -> None:
    value = message_id(*BASE)
    assert value == message_id(*BASE)
    assert uuid.UUID(value).version == 5
    assert value == str(
        uuid.uuid5(msghead.MESSAGE_ID_NAMESPACE, f'["9999-2023",1,"KPR_IPL","{BASE[3]}"]')
    )


@pytest.mark.parametrize(
    "changed",
    [
        ("9999-2024", *BASE[1:]),
        (BASE[0], 2, *BASE[2:]),
        (*BASE[:2], "KPR_IDE", BASE[3]),
        (*BASE[:3], "sha256:" + "ac" * 32),
    ],
    ids=["lineage", "attempt", "part-type", "digest"],
)
def test_message_id_changes_with_each_input(changed: tuple[str, int, str, str]) -> None:
    assert message_id(*changed) != message_id(*BASE)


def test_message_id_inputs_cannot_run_together() -> None:
    assert message_id("a", 1, "b,c", "d") != message_id("a", 1, "b", "c,d")
    assert message_id("a", 1, 'b","c', "d") != message_id("a", 1, "b", 'c","d')


def test_message_id_refuses_negative_attempt() -> None:
    with pytest.raises(ValueError):
        message_id("a", -1, "KPR_IPL", "d")
