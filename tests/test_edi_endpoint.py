"""The EDI endpoint without servers: validate's rules, the route in the plan, the MIME form."""

from __future__ import annotations

import email
import email.policy
import shutil
from pathlib import Path

import pytest

from iplosctl.errors import TransportError
from iplosctl.plugins import OutgoingMessage, TransportSettings
from iplosctl.sandbox.pki import generate_pki
from iplosctl_transport_edi import (
    EdiTransport,
    build_mime,
    message_id_header,
    parse_mime,
    parse_server_url,
)
from tests.conftest import DEMO_EXPORT
from tests.manifest_text import CERTIFICATES, submission_head

TODAY = "2024-01-05"


def write_manifest(root: Path, environment: str, endpoint: str) -> Path:
    (root / "manifests").mkdir(exist_ok=True)
    (root / "exports").mkdir(exist_ok=True)
    shutil.copy(DEMO_EXPORT, root / "exports" / "kommune-2023.xml")
    if not (root / "pki").exists():
        generate_pki(root / "pki")
    path = root / "manifests" / "kommune-2023.yaml"
    path.write_text(
        submission_head(environment=environment, her_id=7100001, service_her_id=7100002)
        + f"""  testPersons: {{names: ["Test Testesen"]}}
  payloadFormatAgreement: iplosctl-export-v1
  endpoint:
{endpoint}
"""
        + CERTIFICATES
    )
    return path


EDI = """    transport: edi
    address: iplos@kommune.testedi.nhn.no
    smtp: smtp://smtp.kommune.example:587
    imap: imaps://imap.kommune.example:993
    username: iplos
    credential: edi"""


def test_validate_refuses_the_production_kpr_address_in_the_test_environment(
    cli, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path, "test", EDI)
    result = cli("validate", manifest)
    assert result.code == 1
    assert "kpr@edi.nhn.no is a production EDI address" in result.err
    assert "set endpoint.registerAddress to KPR's test EDI address" in result.err


def test_validate_accepts_a_test_register_address_in_the_test_environment(
    cli, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path, "test", EDI + "\n    registerAddress: kpr@testedi.nhn.no")
    result = cli("validate", manifest)
    assert result.code == 0, result.err


def test_validate_refuses_a_test_own_address_in_production(cli, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "production", EDI)
    result = cli("validate", manifest)
    assert result.code == 1
    assert "iplos@kommune.testedi.nhn.no is a test EDI address" in result.err
    assert "kpr@edi.nhn.no" not in result.err  # the profile's address is right in production


def test_validate_names_missing_servers(cli, tmp_path: Path) -> None:
    endpoint = "\n".join(line for line in EDI.splitlines() if "imap:" not in line)
    manifest = write_manifest(tmp_path, "sandbox", endpoint)
    result = cli("validate", manifest)
    assert result.code == 1 and "the edi transport needs endpoint.imap" in result.err


def test_validate_refuses_credentials_in_the_smtp_url(cli, tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, "sandbox", EDI.replace("smtp://smtp", "smtp://iplos:planted-pw-93@smtp")
    )
    result = cli("validate", manifest)
    assert result.code == 1 and "planted-pw-93" not in result.err and "smtp" in result.err


def test_plan_shows_the_edi_route_outside_the_sandbox(cli, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "test", EDI + "\n    registerAddress: kpr@testedi.nhn.no")
    result = cli("plan", "--today", TODAY, manifest)
    assert result.code in (0, 2), result.err
    assert (
        "to kpr@testedi.nhn.no (HER-id 8133973) via edi smtp://smtp.kommune.example:587 from "
        "iplos@kommune.testedi.nhn.no; receipts from imaps://imap.kommune.example:993 folder "
        "INBOX"
    ) in result.out


@pytest.mark.parametrize(
    "url",
    ["http://smtp.example", "smtp://user:pw@smtp.example", "smtp://", "imaps://x.example"],
)
def test_server_urls_that_are_refused(url: str) -> None:
    with pytest.raises(TransportError):
        parse_server_url(url, "smtp")


def test_the_edi_transport_refuses_without_its_own_address() -> None:
    with pytest.raises(TransportError, match=r"endpoint\.address"):
        EdiTransport(TransportSettings(url="smtp://127.0.0.1:1", options={"address": ""}))


def _outgoing(msg_id: str = "c5198929-80f4-57f6-a2d2-dc8b9b621564") -> OutgoingMessage:
    return OutgoingMessage(
        message_id=msg_id,
        correlation_id=msg_id,
        subject="KPR_IPL",
        body=bytes(range(256)) * 4,
        to_queue="134197_async",
        reply_to="7100002_async",
        application_properties={
            "fromHerId": "7100002",
            "toHerId": "134197",
            "applicationTimeStamp": "2024-01-05T10:00:00Z",
        },
    )


def test_mime_form_and_back() -> None:
    out = _outgoing()
    raw = build_mime(out, from_address="iplos@kommune.edi.nhn.no", to_address="kpr@edi.nhn.no")
    assert raw == build_mime(  # same message, same mail: a resend is recognised
        out, from_address="iplos@kommune.edi.nhn.no", to_address="kpr@edi.nhn.no"
    )
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["Message-ID"] == message_id_header(out.message_id, "x@kommune.edi.nhn.no")
    assert mail.get_content_type() == "application/pkcs7-mime"
    back = parse_mime(raw, "7100002_async")
    assert back.body == out.body and back.message_id == out.message_id
    assert back.subject == "KPR_IPL" and back.reply_to == "iplos@kommune.edi.nhn.no"
    assert back.application_properties["toHerId"] == "134197"


def test_status_shows_the_edi_route(cli, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "test", EDI + "\n    registerAddress: kpr@testedi.nhn.no")
    result = cli("status", manifest)
    assert (
        "sends to:   kpr@testedi.nhn.no (HER-id 8133973) via edi smtp://smtp.kommune.example:587"
        in result.out
    ), result.out + result.err
    assert "reads:      receipts from imaps://imap.kommune.example:993 folder INBOX" in result.out


def test_validate_requires_a_login(cli, tmp_path: Path) -> None:
    endpoint = "\n".join(line for line in EDI.splitlines() if "credential" not in line)
    manifest = write_manifest(tmp_path, "sandbox", endpoint)
    result = cli("validate", manifest)
    assert result.code == 1 and "set endpoint.username and endpoint.credential" in result.err


@pytest.mark.parametrize(
    ("environment", "agreement", "expected"),
    [
        ("production", False, "error"),
        ("production", True, "warning"),
        ("test", False, None),
    ],
)
def test_edi_without_the_ebxml_envelope_is_refused_in_production_unless_agreed(
    cli, tmp_path: Path, environment: str, agreement: bool, expected: str | None
) -> None:
    endpoint = EDI.replace("testedi.nhn.no", "edi.nhn.no")
    if environment == "test":
        endpoint = EDI + "\n    registerAddress: kpr@testedi.nhn.no"
    if agreement:
        endpoint += "\n    envelopeAgreement: bare-smime"
    manifest = write_manifest(tmp_path, environment, endpoint)
    result = cli("validate", manifest)
    said = [
        "warning" if line.startswith("warning:") else "error"
        for line in result.err.splitlines()
        if "without the ebXML envelope (HIS 1037)" in line
    ]
    assert said == ([expected] if expected else [])
    if expected == "error":  # production has other findings here (revocation): only this
        assert result.code == 1
    assert "Traceback" not in result.err
