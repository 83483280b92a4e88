"""AppRec v1.0 and v1.1: parse both, build XSD-valid receipts, round trip, refuse tricks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.payload.apprec import (
    ERROR_OID,
    NAMESPACES,
    STATUS_DN,
    AppRecError,
    build_apprec,
    parse_apprec,
)
from tests.reference import XSD_DIR

# Synthetic receipts shaped like the published KITH examples.
V10_PARTLY_OK = b"""<?xml version="1.0" encoding="UTF-8"?>
<AppRec xmlns="http://www.kith.no/xmlstds/apprec/2004-11-21"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <MsgType V="APPREC"/>
  <MIGversion>1.0 2004-11-21</MIGversion>
  <GenDate>2024-02-03T08:15:00</GenDate>
  <Id>0b6f8c1e-1111-4d2a-9a51-3c2f7e0c0001</Id>
  <Sender>
    <HCP>
      <Inst>
        <Name>Helsedirektoratet KPR</Name>
        <Id>8000100</Id>
        <TypeId V="HER" DN="HER-id"/>
      </Inst>
    </HCP>
  </Sender>
  <Receiver>
    <HCP>
      <Inst>
        <Name>Demo kommune</Name>
        <Id>999999999</Id>
        <TypeId V="ENH" DN="Organisasjonsnummeret i Enhetsregister"/>
        <HCPerson>
          <Name>Saksbehandler</Name>
          <Id>1234567</Id>
          <TypeId V="HPR" DN="Helsepersonellnummer"/>
        </HCPerson>
      </Inst>
    </HCP>
  </Receiver>
  <Status V="3" DN="OK, feil i delmelding"/>
  <Error S="2.16.578.1.12.4.1.1.8221" V="T02" DN="XML validerer ikke" OT="Recipient 17 &amp; 18"/>
  <!-- a comment between errors is allowed -->
  <Error V="X99"/>
  <OriginalMsgId>
    <MsgType V="KPR_IPL" DN="IPLOS"/>
    <IssueDate>2024-02-01T09:30:00Z</IssueDate>
    <Id>3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f</Id>
  </OriginalMsgId>
</AppRec>
"""

V11_OK = b"""<?xml version="1.0" encoding="UTF-8"?>
<ar:AppRec xmlns:ar="http://www.kith.no/xmlstds/apprec/2012-02-15">
  <ar:MsgType V="APPREC" DN="Applikasjonskvittering"/>
  <ar:MIGversion>v1.1 2012-02-15</ar:MIGversion>
  <ar:GenDate>2024-02-03T09:15:00.1234567+01:00</ar:GenDate>
  <ar:Id>0b6f8c1e-2222-4d2a-9a51-3c2f7e0c0002</ar:Id>
  <ar:Sender>
    <ar:HCP>
      <ar:Inst>
        <ar:Name>Helsedirektoratet KPR</ar:Name>
        <ar:Id>8000100</ar:Id>
        <ar:TypeId V="HER" DN="HER-id"/>
      </ar:Inst>
    </ar:HCP>
  </ar:Sender>
  <ar:Receiver>
    <ar:HCP>
      <ar:Inst>
        <ar:Name>Demo kommune</ar:Name>
        <ar:Id>8000001</ar:Id>
        <ar:TypeId V="HER" DN="HER-id"/>
        <ar:Dept>
          <ar:Name>Saksbehandling</ar:Name>
          <ar:Id>8000002</ar:Id>
          <ar:TypeId V="HER" DN="HER-id"/>
        </ar:Dept>
        <ar:HCPerson>
          <ar:Name>Fagsystem</ar:Name>
          <ar:Id>8000003</ar:Id>
          <ar:TypeId V="HER" DN="HER-id"/>
        </ar:HCPerson>
      </ar:Inst>
    </ar:HCP>
  </ar:Receiver>
  <ar:Status V="1" DN="OK"/>
  <ar:OriginalMsgId>
    <ar:MsgType V="KPR_IDE"/>
    <ar:IssueDate>2024-02-01T10:30:00</ar:IssueDate>
    <ar:Id>4a1c2d3e-8a55-5c0e-9d6f-0a1b2c3d4e60</ar:Id>
  </ar:OriginalMsgId>
</ar:AppRec>
"""


def _schema(version: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_DIR / f"apprec-v{version}.xsd")))


@pytest.mark.parametrize(("version", "xml"), [("1.0", V10_PARTLY_OK), ("1.1", V11_OK)])
def test_samples_are_valid_apprecs(version: str, xml: bytes) -> None:
    """Guards the fixtures themselves: they must be what KITH's XSDs accept."""
    assert _schema(version).validate(etree.fromstring(xml))


def test_parse_v10_with_errors() -> None:
    rec = parse_apprec(V10_PARTLY_OK)
    assert rec.version == "1.0"
    assert rec.msg_id == "0b6f8c1e-1111-4d2a-9a51-3c2f7e0c0001"
    assert rec.gen_date == dt.datetime(2024, 2, 3, 8, 15)
    assert (rec.status, rec.status_text) == ("3", "OK, feil i delmelding")
    assert rec.partly_ok and not rec.ok and not rec.rejected
    assert rec.errors == (
        AppRecError("T02", ERROR_OID, "XML validerer ikke", "Recipient 17 & 18"),
        AppRecError("X99", None, None, None),
    )
    assert rec.original_msg_type == "KPR_IPL"
    assert rec.original_msg_id == "3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f"
    assert rec.original_issue_date == dt.datetime(2024, 2, 1, 9, 30, tzinfo=dt.UTC)
    assert rec.sender_her_ids == ("8000100",)
    assert rec.receiver_her_ids == ()  # ENH and HPR are not HER-ids
    assert (rec.sender_name, rec.receiver_name) == ("Helsedirektoratet KPR", "Demo kommune")


def test_parse_v11_with_service_addressing() -> None:
    rec = parse_apprec(V11_OK)
    assert rec.version == "1.1"
    assert rec.ok and rec.errors == ()
    assert rec.gen_date == dt.datetime(
        2024, 2, 3, 9, 15, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1))
    )
    assert rec.receiver_her_ids == ("8000001", "8000002", "8000003")
    assert rec.original_msg_type == "KPR_IDE"
    assert rec.original_issue_date == dt.datetime(2024, 2, 1, 10, 30)


def test_unknown_status_is_kept_verbatim() -> None:
    rec = parse_apprec(V11_OK.replace(b'<ar:Status V="1" DN="OK"/>', b'<ar:Status V="9"/>'))
    assert rec.status == "9" and rec.status_text is None
    assert not (rec.ok or rec.rejected or rec.partly_ok)


def _build_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "version": "1.1",
        "msg_id": "0b6f8c1e-3333-4d2a-9a51-3c2f7e0c0003",
        "gen_date": dt.datetime(2024, 2, 3, 8, 0, tzinfo=dt.UTC),
        "sender_name": "KPR sandbox",
        "sender_her_id": "8000100",
        "receiver_name": "Bø kommune",
        "receiver_her_id": "8000001",
        "status": "2",
        "errors": [
            AppRecError("T02", ERROR_OID, "XML validerer ikke", "line 12"),
            AppRecError("E10", ERROR_OID, "Ugyldig meldingsidentifikator"),
        ],
        "original_msg_type": "KPR_IPL",
        "original_msg_id": "3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f",
        "original_issue_date": dt.datetime(2024, 2, 1, 9, 30, tzinfo=dt.UTC),
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("status", sorted(STATUS_DN))
def test_built_apprec_validates_and_round_trips(version: str, status: str) -> None:
    args = _build_args(version=version, status=status)
    xml = build_apprec(**args)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<AppRec ')
    root = etree.fromstring(xml)
    assert etree.QName(root).namespace == NAMESPACES[version]  # type: ignore[index]
    schema = _schema(version)
    assert schema.validate(root), schema.error_log
    rec = parse_apprec(xml)
    assert rec.version == version
    assert rec.msg_id == args["msg_id"]
    assert rec.gen_date == args["gen_date"]
    assert (rec.status, rec.status_text) == (status, STATUS_DN[status])
    assert rec.errors == tuple(args["errors"])
    assert rec.original_msg_type == "KPR_IPL"
    assert rec.original_msg_id == args["original_msg_id"]
    assert rec.original_issue_date == args["original_issue_date"]
    assert rec.sender_her_ids == ("8000100",)
    assert rec.receiver_her_ids == ("8000001",)
    assert (rec.sender_name, rec.receiver_name) == ("KPR sandbox", "Bø kommune")


def test_built_apprec_addresses_the_service_and_is_deterministic() -> None:
    args = _build_args(receiver_service_name="Saksbehandling", receiver_service_her_id="8000002")
    xml = build_apprec(**args)
    assert xml == build_apprec(**args)
    assert _schema("1.1").validate(etree.fromstring(xml))
    assert parse_apprec(xml).receiver_her_ids == ("8000001", "8000002")


def test_build_refuses_unknown_status_and_version() -> None:
    with pytest.raises(ValueError, match="status"):
        build_apprec(**_build_args(status="4"))
    with pytest.raises(ValueError, match="version"):
        build_apprec(**_build_args(version="2.0"))


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        (b"", "not well-formed"),
        (b"<AppRec", "not well-formed"),
        (V11_OK.replace(b"2012-02-15", b"2099-01-01"), "not an AppRec"),
        (b"<AppRec/>", "no namespace"),
        (V11_OK.replace(b"<ar:Id>0b6f8c1e-2222-4d2a-9a51-3c2f7e0c0002</ar:Id>", b""), "lacks Id"),
        (V11_OK.replace(b'<ar:Status V="1" DN="OK"/>', b"<ar:Status/>"), r"Status/@V"),
        (
            V11_OK.replace(b"<ar:Id>4a1c2d3e-8a55-5c0e-9d6f-0a1b2c3d4e60</ar:Id>", b""),
            "OriginalMsgId/Id",
        ),
        (V11_OK.replace(b"2024-02-03T09:15", b"03.02.2024 09:15"), "GenDate is not"),
    ],
    ids=[
        "empty",
        "truncated",
        "other-namespace",
        "no-namespace",
        "no-id",
        "no-status",
        "no-original-id",
        "bad-date",
    ],
)
def test_parse_refuses_broken_receipts(xml: bytes, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment) as info:
        parse_apprec(xml)
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("doctype", "reference"),
    [
        (b'<!DOCTYPE AppRec [<!ENTITY x SYSTEM "file:///etc/passwd">]>', b"&x;"),
        (b'<!DOCTYPE AppRec [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>', b"&b;"),
        (b'<!DOCTYPE AppRec SYSTEM "http://dtd.invalid/apprec.dtd">', b""),
    ],
    ids=["external-entity", "entity-expansion", "external-dtd"],
)
def test_parser_refuses_dtds_and_entities(doctype: bytes, reference: bytes) -> None:
    body = V10_PARTLY_OK.replace(b"<Name>Demo kommune</Name>", b"<Name>" + reference + b"</Name>")
    xml = body.replace(b"<AppRec ", doctype + b"\n<AppRec ", 1)
    with pytest.raises(PayloadError, match="DOCTYPE declaration") as info:
        parse_apprec(xml)
    assert "root:" not in info.value.message  # nothing from /etc/passwd leaked


def test_attribute_entity_reference_is_refused() -> None:
    doctype = b'<!DOCTYPE AppRec [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    xml = doctype + V10_PARTLY_OK.split(b"?>\n", 1)[1].replace(b'OT="Recipient', b'OT="&x;')
    with pytest.raises(PayloadError, match="not well-formed"):
        parse_apprec(xml)
