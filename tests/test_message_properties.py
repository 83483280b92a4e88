"""Outgoing messages carry the reference client's X-MessageInfo-* and level-id properties.

The expected values are extracted from the real MsgHead (decrypted and verified
with `openssl cms`) with the XPaths of Helsenorge.Messaging's
`MetadataHelper.ExtractMessagePropertiesFromMsgHead`, so the properties
iplosctl builds from its inputs cannot drift from what the document says.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from iplosctl import lockfile as lf
from tests.test_transport_security import TODAY, _manifest, env  # noqa: F401

MH = {"mh": "http://www.kith.no/xmlstds/msghead/2006-05-24"}


def _cms(*args: str, data: bytes) -> bytes:
    proc = subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def hnm_metadata(msghead: bytes) -> dict[str, str]:
    """HNM's MetadataHelper for a MsgHead, written again with lxml (XPaths as in HNM)."""
    root = etree.fromstring(msghead)
    info = root.find(".//mh:MsgInfo", MH)
    out: dict[str, str] = {}

    def her(org_paths: list[str], where: etree._Element | None) -> str | None:
        for path in org_paths:
            for type_id in (
                where.findall(path + "/mh:Ident/mh:TypeId", MH) if where is not None else []
            ):
                if type_id.get("V") == "HER":
                    return type_id.getparent().findtext("mh:Id", namespaces=MH)
        return None

    out["X-MessageInfo-Type"] = info.find("mh:Type", MH).get("V")
    out["X-MessageInfo-MsgId"] = info.findtext("mh:MsgId", namespaces=MH)
    for role, element in (("Sender", "mh:Sender"), ("Receiver", "mh:Receiver")):
        el = info.find(element, MH)
        lvl1 = her(["mh:Organisation"], el)
        lvl2 = her(
            ["mh:Organisation/mh:Organisation", "mh:Organisation/mh:HealthcareProfessional"], el
        )
        if lvl1:
            out[f"X-{role}-Lvl1Id"] = lvl1
        if lvl2:
            out[f"X-{role}-Lvl2Id"] = lvl2
    documents = root.findall(".//mh:Document", MH)
    content = documents[0].find("mh:RefDoc/mh:Content", MH)
    out["X-MessageInfo-SchemaNamespace"] = etree.QName(content[0]).namespace
    out["X-AttachmentInfo-Count"] = str(len(documents) - 1)
    out["X-AttachmentInfo-TotalSizeInBytes"] = "0"
    out["X-AttachmentInfo-HasExternalReference"] = str(
        any(d.find("mh:RefDoc/mh:FileReference", MH) is not None for d in documents[1:])
    )
    return out


@pytest.mark.usefixtures("env")
def test_sent_messages_carry_hnm_metadata_that_matches_their_msghead(
    cli,
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    manifest = _manifest(tmp_path, environment="test", url="../outbox")
    result = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert result.code == 0, result.all
    lock = lf.load(manifest.with_name("kommune-2023.lock.yaml"))
    assert lock is not None
    pki = tmp_path / "pki"
    metas = sorted(outbox.rglob("*.json"))
    assert len(metas) == len(lock.attempts[0].parts) == 2
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        body = meta_path.with_suffix(".p7m").read_bytes()
        signed = _cms(
            "-decrypt", "-inform", "DER",
            "-recip", str(pki / "register-encryption.pem"),
            "-inkey", str(pki / "register-encryption.key"),
            data=body,
        )  # fmt: skip
        msghead = _cms(
            "-verify", "-inform", "DER", "-binary", "-CAfile", str(pki / "ca.pem"),
            "-purpose", "any",
            data=signed,
        )  # fmt: skip
        expected = hnm_metadata(msghead)
        props = meta["application_properties"]
        assert {k: props.get(k) for k in expected} == expected
        assert expected["X-Sender-Lvl1Id"] == "900100"
        assert expected["X-Sender-Lvl2Id"] == "900101"
        assert expected["X-Receiver-Lvl1Id"] == "8133973"
        assert "X-Receiver-Lvl2Id" not in props
        assert props["X-MessageInfo-MsgId"] == meta["message_id"]
