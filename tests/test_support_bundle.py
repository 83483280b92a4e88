"""The support bundle leaves the municipality: plant personal data and secrets, scan every member.

One scene drives the tests: the demo submission with planted ids and names in its export,
sent to the embedded sandbox register (whose E31 rejects the bad id), then a lockfile with a
register OT and a transport error quoting planted values, a quarantined message, and a
manifest with planted test persons, broker user, secrets and a PKCS#12 certificate.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from iplosctl import __version__, endpoint, lockfile, plugins
from iplosctl.manifest import Manifest, load_manifest
from iplosctl.plan import file_digest
from iplosctl.receipts import quarantine_dir
from iplosctl.sandbox.pki import generate_pki
from iplosctl.support_bundle import BUNDLE_JSON, MEMBERS, README_TXT, build_support_bundle
from tests.conftest import planted_person_id

EXPORT_ID = planted_person_id("148856")
TEST_PERSON_ID = planted_person_id("259248")
BAD_ID = EXPORT_ID[:10] + str((int(EXPORT_ID[10]) + 1) % 10)  # wrong k2: the register's E31
OT_ID = planted_person_id("069951")  # only in the register's OT and a transport error's description
EXPORT_NAME = "Kari Bundlesen"
BAD_NAME = "Ola Lekkasjesen"
TEST_PERSON_NAME = "Testa Plantedatter"
BROKER_USER = "planted-broker-user"
BROKER_PASSWORD = "Planted-Broker-Passw0rd"
PASSPHRASE = "Planted-Key-Passphrase"
DESCRIPTION = "Planted free text from the bus"
QUARANTINE_BODY = f"quarantined body of {EXPORT_NAME}"

PLANTED = [
    EXPORT_ID,
    f"{EXPORT_ID[:6]} {EXPORT_ID[6:]}",
    TEST_PERSON_ID,
    BAD_ID,
    OT_ID,
    f"{OT_ID[:6]}-{OT_ID[6:]}",
    EXPORT_NAME,
    "Bundlesen",
    BAD_NAME,
    "Lekkasjesen",
    TEST_PERSON_NAME,
    "Plantedatter",
    BROKER_USER,
    BROKER_PASSWORD,
    PASSPHRASE,
    DESCRIPTION,
    QUARANTINE_BODY,
    "PRIVATE KEY",
    "<Recipient>",
]


def _recipient(local: str, pid: str, name: str, code: str = "15") -> str:
    return (
        f"  <Recipient>\n    <LocalId>{local}</LocalId>\n    <PersonId>{pid}</PersonId>\n"
        f'    <Name>{name}</Name>\n    <Service code="{code}"><From>2023-02-01</From>'
        f"<OrgNumber>310000027</OrgNumber></Service>\n  </Recipient>\n"
    )


@dataclass
class Scene:
    manifest: Manifest
    export: Path
    lock: lockfile.Lockfile
    pki: Path
    tmp: Path


def _plant_export(manifest_path: Path) -> Path:
    export = manifest_path.parent.parent / "examples" / "exports" / "demo-2023.xml"
    extra = (
        _recipient("b-1", EXPORT_ID, EXPORT_NAME)
        + _recipient("b-2", BAD_ID, BAD_NAME, code="21")
        + _recipient("b-3", TEST_PERSON_ID, TEST_PERSON_NAME)
    )
    export.write_text(export.read_text().replace("</IplosExport>", extra + "</IplosExport>"))
    return export


def _plant_lockfile(path: Path) -> lockfile.Lockfile:
    """The register's OT quotes an id, a DN quotes one too, and a transport error follows."""
    lock = lockfile.load(path)
    assert lock is not None and lock.last_attempt is not None
    rejected = [p for p in lock.last_attempt.parts if p.state == "rejected"]
    assert rejected, [p.state for p in lock.last_attempt.parts]
    receipt = rejected[0].receipt
    assert receipt is not None and any(e.code == "E31" for e in receipt.errors)
    for error in receipt.errors:
        error.original_text = f"Recipient {BAD_ID} ({BAD_NAME}): PersonId has wrong check digits"
    receipt.errors.append(
        lockfile.ReceiptError("E31", "2.16.578.1.12.4.1.1.8221", f"fnr {OT_ID} er feil", OT_ID)
    )
    first = lock.last_attempt
    lock.attempts.append(
        lockfile.Attempt(
            number=first.number + 1,
            created_at="2024-01-10T08:00:00Z",
            manifest_digest=first.manifest_digest,
            source_digest=first.source_digest,
            payload_digest="sha256:" + "ab" * 32,
            summary={},
            parts=[
                lockfile.Part(
                    type="KPR_IPL",
                    msg_id="0f0e0d0c-0b0a-4909-8807-060504030201",
                    payload_digest="sha256:" + "cd" * 32,
                    state="transport-error",
                    size_bytes=1234,
                    journaled_at="2024-01-10T08:00:01Z",
                    sent_at="2024-01-10T08:00:02Z",
                    receipt_at="2024-01-10T08:01:00Z",
                    transport_error={
                        "condition": "amqp:unauthorized-access",
                        "description": f"{DESCRIPTION}: {BROKER_USER}, {OT_ID[:6]}-{OT_ID[6:]}",
                        "data": EXPORT_NAME,
                    },
                )
            ],
            # an operator's decision whose free text quotes an id (written by hand: the
            # command scrubs it, a lockfile edited or written by an older iplosctl may not)
            decisions=[
                lockfile.Decision(
                    at="2024-01-11T07:30:00Z",
                    by="it-drift",
                    action="abandon",
                    reason=f"KPR confirmed on the phone it never arrived (case {OT_ID})",
                    basis="confirmed-by-register",
                    parts=["KPR_IPL"],
                )
            ],
        )
    )
    lockfile.save(path, lock)
    return lock


def _plant_quarantine(manifest: Manifest) -> None:
    """A message that matched nothing: its body and bus properties quote planted values."""
    folder = quarantine_dir(manifest)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / "20240110T090000Z-stray"
    stem.with_suffix(".p7m").write_text(QUARANTINE_BODY)
    meta = {
        "quarantineVersion": 1,
        "submission": manifest.name,
        "quarantinedAt": "2024-01-10T09:00:00Z",
        "queue": "900101_error",
        "kind": "unmatched",
        "reason": "transport error amqp:not-found for message stray-1, which is not in x",
        "originalMsgId": "stray-1",
        "bodySha256": "0" * 64,
        "bodyBytes": len(QUARANTINE_BODY),
        "amqp": {
            "messageId": "q-1",
            "correlationId": None,
            "subject": None,
            "applicationProperties": {"errorDescription": f"{DESCRIPTION} {EXPORT_ID}"},
        },
    }
    stem.with_suffix(".json").write_text(json.dumps(meta))


def _plant_manifest(path: Path, pki: Path) -> None:
    """Test persons, a broker user and credential, and certificates (one in a PKCS#12 bag)."""
    files = generate_pki(pki)
    key = serialization.load_pem_private_key(
        files.key("municipality-signing").read_bytes(), password=None
    )
    cert_pem = files.certificate("municipality-signing").read_bytes()
    bag = pkcs12.serialize_key_and_certificates(
        b"signing",
        key,  # type: ignore[arg-type]
        x509.load_pem_x509_certificate(cert_pem),
        None,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    (pki / "signing.p12").write_bytes(bag)
    text = path.read_text()
    assert '  testPersons:\n    names: ["Donald Duck", "Test Testesen"]\n' in text
    text = text.replace(
        '  testPersons:\n    names: ["Donald Duck", "Test Testesen"]\n',
        f'  testPersons:\n    names: ["Donald Duck", "{TEST_PERSON_NAME}"]\n'
        f'    ids: ["{TEST_PERSON_ID}"]\n',
    )
    text += (
        '  rules: {person-id: "off"}\n'
        "  endpoint:\n"
        "    transport: amqp\n"
        "    url: amqps://sb.test.nhn.no:5671\n"
        f"    username: {BROKER_USER}\n"
        "    credential: amqp-password\n"
        "    tls:\n"
        f"      clientCertificate: {files.certificate('municipality-encryption')}\n"
        f"      clientKey: {files.key('municipality-encryption')}\n"
        "  certificates:\n"
        "    signing:\n"
        f"      certificate: {pki / 'signing.p12'}\n"
        f"      key: {pki / 'signing.p12'}\n"
        "      passphraseSecret: signing-passphrase\n"
        "    encryption:\n"
        f"      certificate: {files.certificate('municipality-encryption')}\n"
        f"      key: {files.key('municipality-encryption')}\n"
        "    register:\n"
        f"      signing: {files.certificate('register-signing')}\n"
        f"      encryption: {files.certificate('register-encryption')}\n"
        f"      trustAnchors: {files.ca}\n"
    )
    path.write_text(text)


@pytest.fixture
def scene(cli, demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    export = _plant_export(demo_copy)
    # let the bad id through the pre-flight so the sandbox register answers E31
    original = demo_copy.read_text()
    demo_copy.write_text(original + '  rules: {person-id: "off"}\n')
    applied = cli("apply", "--auto-approve", demo_copy)
    assert applied.code == 0, applied.all
    cli("receipts", "--wait", "20s", demo_copy)
    demo_copy.write_text(original)
    lock = _plant_lockfile(demo_copy.with_name("demo-2023.lock.yaml"))
    _plant_manifest(demo_copy, tmp_path / "pki")
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_PASSWORD", BROKER_PASSWORD)
    monkeypatch.setenv("IPLOSCTL_SECRET_SIGNING_PASSPHRASE", PASSPHRASE)
    manifest = load_manifest(demo_copy)
    _plant_quarantine(manifest)
    return Scene(manifest, export, lock, tmp_path / "pki", tmp_path)


def _members(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name).decode("utf-8") for name in zf.namelist()}


def test_bundle_holds_no_personal_data_and_no_secrets(scene: Scene) -> None:
    out = build_support_bundle([scene.manifest], scene.tmp / "bundle.zip")
    members = _members(out)
    assert list(members) == list(MEMBERS)
    key_bodies = [
        line
        for key in scene.pki.glob("*.key")
        for line in key.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    assert key_bodies
    for name, text in members.items():
        for value in PLANTED:
            assert value not in text, f"{value!r} leaked into {name}"
        for line in key_bodies:
            assert line not in text, f"private key material leaked into {name}"
        assert str(scene.tmp) not in text, f"a local path leaked into {name}"


def test_bundle_holds_the_facts_the_register_needs(scene: Scene) -> None:
    out = build_support_bundle([scene.manifest], scene.tmp / "bundle.zip")
    members = _members(out)
    data = json.loads(members[BUNDLE_JSON])
    readme = members[README_TXT]

    assert data["tool"]["iplosctl"] == __version__
    versions = {(p["name"], p["version"]) for p in data["tool"]["plugins"]}
    assert {(p.name, p.version) for p in plugins.all_installed()} <= versions
    assert data["tool"]["python"] and data["tool"]["os"]

    [s] = data["submissions"]
    assert (s["name"], s["year"], s["environment"]) == ("demo-2023", 2023, "sandbox")
    assert s["municipality"]["number"] == "9999"
    assert s["manifestDigest"] == scene.manifest.digest
    assert s["source"]["digest"] == file_digest(scene.export)
    assert s["testPersons"] == {"names": 2, "ids": 1}
    assert s["endpoint"]["username"] == "set"
    assert s["endpoint"]["credential"] == "set"
    assert s["endpoint"]["url"] == "amqps://sb.test.nhn.no:5671"
    assert s["endpoint"]["tls"]["clientKey"] == "set"
    signing = s["certificates"]["signing"]
    assert signing["subjectCN"] == "Demo kommune signering (TEST)"  # read through PKCS#12
    assert set(signing) == {"file", "subjectCN", "serial", "notBefore", "notAfter"}
    assert s["certificates"]["signingPassphrase"] == "set"
    assert s["deadline"]["window"] == "rehearsal"

    lock = s["lockfile"]
    assert (lock["lineage"], lock["serial"]) == (scene.lock.lineage, scene.lock.serial)
    msg_ids = [p["msgId"] for a in lock["attempts"] for p in a["parts"]]
    assert msg_ids == [p.msg_id for a in scene.lock.attempts for p in a.parts]
    payloads = {p["payloadDigest"] for a in lock["attempts"] for p in a["parts"]}
    assert payloads == {p.payload_digest for a in scene.lock.attempts for p in a.parts}
    first = lock["attempts"][0]
    rejected = next(p for p in first["parts"] if p["state"] == "rejected")
    assert rejected["sentAt"] and rejected["receiptAt"]
    assert rejected["receipt"]["status"] == "2"
    codes = [(e["code"], e["text"]) for e in rejected["receipt"]["errors"]]
    assert ("E31", "Pasientens fødselsnummer er feil") in codes
    assert ("E31", "fnr [id] er feil") in codes  # DN kept, its id scrubbed
    assert all(set(e) == {"code", "system", "text"} for e in rejected["receipt"]["errors"])
    transport = lock["attempts"][1]["parts"][0]
    assert transport["transportError"] == {"condition": "amqp:unauthorized-access"}
    # the operator's decision: who, when, why (its id scrubbed), on what basis
    assert lock["attempts"][0]["decisions"] == []
    [decision] = lock["attempts"][1]["decisions"]
    assert decision == {
        "at": "2024-01-11T07:30:00Z",
        "by": "it-drift",
        "action": "abandon",
        "basis": "confirmed-by-register",
        "reason": "KPR confirmed on the phone it never arrived (case [id])",
        "parts": ["KPR_IPL"],
    }
    assert (
        "decision abandon (confirmed-by-register) by it-drift at 2024-01-11T07:30:00Z "
        "(KPR_IPL): KPR confirmed on the phone it never arrived (case [id])"
    ) in readme

    [q] = s["quarantined"]
    assert (q["kind"], q["at"], q["originalMsgId"]) == (
        "unmatched",
        "2024-01-10T09:00:00Z",
        "stray-1",
    )
    assert "amqp:not-found" in q["reason"]

    assert s["plan"]["action"] == "resubmit"
    assert [p["type"] for p in s["plan"]["parts"]] == ["KPR_IPL", "KPR_IDE"]
    contacts = [c["address"] for c in s["register"]["contacts"]]
    assert "registervakt@kundesenter.nhn.no" in contacts

    for fact in [
        __version__,
        scene.manifest.digest,
        file_digest(scene.export),
        *msg_ids,
        "E31",
        "amqp:unauthorized-access",
        "registervakt@kundesenter.nhn.no",
        "Meld fra straks",
    ]:
        assert fact in readme, fact


def test_bundle_is_deterministic_apart_from_its_creation_time(scene: Scene) -> None:
    today = dt.date(2024, 1, 20)
    first = dt.datetime(2024, 1, 20, 10, 0, tzinfo=dt.UTC)
    a = build_support_bundle([scene.manifest], scene.tmp / "a.zip", today=today, now=first)
    b = build_support_bundle([scene.manifest], scene.tmp / "b.zip", today=today, now=first)
    assert a.read_bytes() == b.read_bytes()

    later = first + dt.timedelta(hours=3)
    c = build_support_bundle([scene.manifest], scene.tmp / "c.zip", today=today, now=later)
    one, other = _members(a), _members(c)
    assert list(one) == list(other) == list(MEMBERS)
    data_one, data_other = json.loads(one[BUNDLE_JSON]), json.loads(other[BUNDLE_JSON])
    assert (data_one.pop("createdAt"), data_other.pop("createdAt")) == (
        "2024-01-20T10:00:00Z",
        "2024-01-20T13:00:00Z",
    )
    assert data_one == data_other
    assert one[README_TXT].splitlines()[2:] == other[README_TXT].splitlines()[2:]


def test_bundle_is_written_atomically_over_an_old_one(scene: Scene) -> None:
    out = scene.tmp / "bundles" / "support.zip"
    out.parent.mkdir()
    out.write_bytes(b"an old bundle")
    assert build_support_bundle([scene.manifest], out) == out
    assert zipfile.is_zipfile(out)
    assert [p.name for p in out.parent.iterdir()] == ["support.zip"]  # no temp file left


def test_bundle_before_anything_was_sent_and_with_a_damaged_lockfile(
    demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundle is for when things go wrong: a broken input is reported, not fatal."""
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifest = load_manifest(demo_copy)
    data = json.loads(_members(build_support_bundle([manifest], tmp_path / "a.zip"))[BUNDLE_JSON])
    [s] = data["submissions"]
    assert s["lockfile"] is None
    assert s["quarantined"] == []
    assert s["plan"]["action"] == "submit"
    assert s["certificates"] == {"sandboxPki": "not created yet"}
    assert endpoint.state_dir() == tmp_path / "state"
    assert not (tmp_path / "state" / "sandbox").exists()  # describing never creates a PKI

    manifest.lockfile_path.write_text("lockfileVersion: 1\nsubmission: demo-2023\n")
    data = json.loads(_members(build_support_bundle([manifest], tmp_path / "b.zip"))[BUNDLE_JSON])
    [s] = data["submissions"]
    assert "damaged lockfile" in s["lockfile"]["error"]
    assert "damaged lockfile" in s["plan"]["error"]
