"""Certificate checks with real parts: an enterprise-style chain and CRLs made by `openssl`,
CRL distribution points served over loopback HTTP, CMS envelopes made by `openssl cms`,
and receipts read through the directory transport (no broker needed).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification as xv

from iplosctl import lockfile, receipts
from iplosctl.manifest import Manifest, load_manifest
from iplosctl.payload import revocation
from iplosctl.payload.apprec import build_apprec
from iplosctl.payload.cms import (
    CmsError,
    Failure,
    decrypt_then_verify,
    load_certificate,
    load_private_key,
    sign_then_encrypt,
)
from iplosctl.plugins import OutgoingMessage
from iplosctl.sandbox.pki import PkiFiles, generate_pki
from iplosctl_transport_directory import message_metadata
from tests.conftest import DEMO_EXPORT, DEMO_MANIFEST
from tests.enterprise_pki import (
    CrlServer,
    EnterprisePki,
    build_enterprise_pki,
    crl_server,
    free_port,
    ocsp_responder,
    openssl,
)


def now() -> dt.datetime:
    """The clock at each check: the test certificates start when the fixtures run."""
    return dt.datetime.now(dt.UTC)


REGISTER_HER_ID = "8133973"
#: nothing listens on the discard port: a distribution point there is unreachable
DEAD_BASE = "http://127.0.0.1:9"


# --- fixtures: the PKIs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[CrlServer]:
    with crl_server() as running:
        yield running


@pytest.fixture(scope="module")
def ent(tmp_path_factory: pytest.TempPathFactory, server: CrlServer) -> EnterprisePki:
    """Buypass-like chain with CRL distribution points on the loopback server.

    Extra leaves: a revoked register signing certificate, one expiring in 10 days, an
    expired one and one not yet valid.
    """
    pki = build_enterprise_pki(tmp_path_factory.mktemp("ent"), crl_base=server.base)
    pki.issue("register-signing-revoked", "signing")
    pki.revoke("register-signing-revoked")
    pki.issue("expiring", "signing", days=10)
    pki.issue("expired", "signing", start="20200101000000Z", end="20210101000000Z")
    pki.issue("future", "signing", start="20991231000000Z", end="21000101000000Z")
    server.files["intermediate.crl"] = pki.crl("intermediate")
    server.files["root.crl"] = pki.crl("root")
    return pki


@pytest.fixture(scope="module")
def no_eku(tmp_path_factory: pytest.TempPathFactory) -> EnterprisePki:
    """An intermediate with no extended key usage at all; no distribution points."""
    return build_enterprise_pki(tmp_path_factory.mktemp("noeku"), intermediate_eku=None)


@pytest.fixture(scope="module")
def dead(tmp_path_factory: pytest.TempPathFactory) -> EnterprisePki:
    """Distribution points nobody answers (a machine without network access)."""
    return build_enterprise_pki(tmp_path_factory.mktemp("dead"), crl_base=DEAD_BASE)


@pytest.fixture(scope="module")
def sandbox_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return generate_pki(tmp_path_factory.mktemp("sandbox-pki"))


# --- helpers ------------------------------------------------------------------------------


def cert(path: Path) -> x509.Certificate:
    return load_certificate(path)


def write_manifest(
    root: Path,
    pki: EnterprisePki | PkiFiles,
    *,
    environment: str = "test",
    register_signing: str = "register-signing",
    signing: str = "municipality-signing",
    register_encryption: Path | None = None,
    extra: str = "",
    endpoint: str = "    transport: directory\n    url: ../bus\n",
) -> Path:
    """The demo manifest in `root` with `pki`'s certificates and a directory transport."""
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "examples" / "exports").mkdir(parents=True, exist_ok=True)
    (root / "bus").mkdir(exist_ok=True)
    shutil.copy(DEMO_EXPORT, root / "examples" / "exports" / DEMO_EXPORT.name)
    text = DEMO_MANIFEST.read_text(encoding="utf-8").replace(
        "environment: sandbox", f"environment: {environment}"
    )
    anchors = pki.root if isinstance(pki, EnterprisePki) else pki.ca
    intermediates = (
        f"    intermediates: {pki.intermediate}\n" if isinstance(pki, EnterprisePki) else ""
    )
    text = (
        text.rstrip("\n")
        + f"""
  endpoint:
{endpoint}  certificates:
    signing:
      certificate: {pki.certificate(signing)}
      key: {pki.key(signing)}
    encryption:
      certificate: {pki.certificate("municipality-encryption")}
      key: {pki.key("municipality-encryption")}
    register:
      signing: {pki.certificate(register_signing)}
      encryption: {register_encryption or pki.certificate("register-encryption")}
      trustAnchors: {anchors}
{intermediates}{extra}"""
    )
    path = root / "manifests" / DEMO_MANIFEST.name
    path.write_text(text, encoding="utf-8")
    return path


def plan_json(cli, path: Path, *args: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    run = cli("plan", path, "--format", "json", *args)
    assert "Traceback" not in run.all
    return run.code, json.loads(run.out)["submissions"][0]


def findings(sub: dict, rule: str) -> list[dict]:
    return [f for f in sub["findings"] if f["rule"] == rule]


# --- 3. chain policy: enterprise CA chains ---------------------------------------------------


@pytest.mark.parametrize("which", ["emailProtection", "no EKU"])
def test_receipt_signer_with_an_enterprise_chain_is_accepted(
    which: str, ent: EnterprisePki, no_eku: EnterprisePki
) -> None:
    pki = ent if which == "emailProtection" else no_eku
    signer, root, inter = (
        cert(pki.certificate("register-signing")),
        cert(pki.root),
        cert(pki.intermediate),
    )
    if which == "emailProtection":
        # the policy used before: a web-PKI client verifier refuses this chain
        webpki = (
            xv.PolicyBuilder()
            .store(xv.Store([root]))
            .time(now())
            .extension_policies(
                ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=xv.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        with pytest.raises(xv.VerificationError, match="EKU"):
            webpki.verify(signer, [inter])
    blob = sign_then_encrypt(
        b"<AppRec/>",
        signer_cert=signer,
        signer_key=load_private_key(pki.key("register-signing"), None),
        recipient_cert=cert(pki.certificate("municipality-encryption")),
    )
    content = decrypt_then_verify(
        blob,
        own_cert=cert(pki.certificate("municipality-encryption")),
        own_key=load_private_key(pki.key("municipality-encryption"), None),
        sender_certs=[signer],
        trust_anchors=[root],
        intermediates=[inter],
        now=now(),
    )
    assert content == b"<AppRec/>"


def test_plan_checks_all_four_enterprise_certificates(
    cli, tmp_path: Path, ent: EnterprisePki, server: CrlServer
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, ent)
    _code, sub = plan_json(cli, path)
    certs = {c["role"]: c for c in sub["certificates"]}
    assert set(certs) == {"signing", "encryption", "register signing", "register encryption"}
    for c in certs.values():
        assert c["chain"] == "ok"
        assert c["revocation"] == "good"
        assert f"CRL {server.base}/intermediate.crl" in c["revocationDetail"]
        assert 395 <= c["daysLeft"] <= 400
    assert not [f for f in sub["findings"] if f["rule"].startswith("certificate-")]
    assert {"intermediate.crl", "root.crl"} <= set(server.requests)


def test_own_certificates_under_an_intermediate_without_eku_chain(
    cli, tmp_path: Path, no_eku: EnterprisePki
) -> None:  # type: ignore[no-untyped-def]
    _code, sub = plan_json(cli, write_manifest(tmp_path, no_eku))
    assert [c["chain"] for c in sub["certificates"]] == ["ok"] * 4
    assert not findings(sub, "certificate-chain")


# --- 1. validity and chain of every certificate, in every format ----------------------------


def test_days_to_expiry_are_shown_in_text_markdown_and_json(
    cli, tmp_path: Path, ent: EnterprisePki
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, ent, signing="expiring")
    _code, sub = plan_json(cli, path)
    signing = next(c for c in sub["certificates"] if c["role"] == "signing")
    assert signing["daysLeft"] in (9, 10)
    (warning,) = findings(sub, "certificate-validity")
    assert warning["severity"] == "warning"
    assert "signing certificate" in warning["message"] and "expires in" in warning["message"]
    text = cli("plan", path).out
    assert f"{signing['daysLeft']} day(s) left" in text
    assert "register encryption: " in text and "chain ok" in text
    markdown = cli("plan", path, "--format", "markdown").out
    assert "| certificate | days left | until | chain | revocation |" in markdown
    assert f"| {signing['daysLeft']} | {signing['notAfter']} | ok | good |" in markdown


@pytest.mark.parametrize(
    ("stem", "words"), [("expired", "expired on 2021-01-01"), ("future", "not valid before")]
)
def test_expired_or_not_yet_valid_certificate_is_an_error(
    cli, tmp_path: Path, ent: EnterprisePki, stem: str, words: str
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, ent, register_signing=stem)
    code, sub = plan_json(cli, path)
    assert code == 1 and sub["action"] == "blocked"
    (error,) = findings(sub, "certificate-validity")
    assert error["severity"] == "error" and "register signing certificate" in error["message"]
    assert words in error["message"]
    if stem == "expired":
        assert (
            next(c for c in sub["certificates"] if c["role"] == "register signing")["daysLeft"]
            < -365
        )


def test_register_encryption_certificate_gets_a_chain_check(
    cli, tmp_path: Path, ent: EnterprisePki, no_eku: EnterprisePki
) -> None:  # type: ignore[no-untyped-def]
    foreign = no_eku.certificate("register-encryption")  # another root: not trusted here
    path = write_manifest(tmp_path, ent, register_encryption=foreign)
    code, sub = plan_json(cli, path)
    assert code == 1
    (error,) = findings(sub, "certificate-chain")
    assert error["severity"] == "error"
    assert error["message"].startswith("register encryption certificate")
    assert "does not chain to the trust anchors" in error["message"]
    encryption = next(c for c in sub["certificates"] if c["role"] == "register encryption")
    assert encryption["chain"] != "ok"


def test_validate_refuses_an_expired_certificate_in_one_line(
    cli, tmp_path: Path, ent: EnterprisePki
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, ent, signing="expired")
    run = cli("validate", path)
    assert run.code == 1 and "Traceback" not in run.all
    (line,) = [ln for ln in run.err.splitlines() if "certificate-validity" in ln]
    assert line.startswith(f"{path}: error: certificate-validity: signing certificate")
    assert cli("validate", "--no-files", path).code == 0  # PR runners have no certificates


# --- 2. revocation ------------------------------------------------------------------------


def test_revoked_certificate_from_the_distribution_point_blocks_the_plan(
    cli, tmp_path: Path, ent: EnterprisePki, server: CrlServer
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, ent, register_signing="register-signing-revoked")
    code, sub = plan_json(cli, path)
    assert code == 1 and sub["action"] == "blocked"
    (error,) = findings(sub, "certificate-revocation")
    assert error["severity"] == "error" and "is revoked" in error["message"]
    assert f"CRL {server.base}/intermediate.crl" in error["message"]
    revoked = next(c for c in sub["certificates"] if c["role"] == "register signing")
    assert revoked["revocation"] == "revoked"


def test_crl_files_in_the_manifest_work_without_network(
    cli, tmp_path: Path, ent: EnterprisePki, server: CrlServer
) -> None:  # type: ignore[no-untyped-def]
    crl_dir = tmp_path / "crls"
    crl_dir.mkdir()
    (crl_dir / "intermediate.crl").write_bytes(ent.crl("intermediate", der=False))
    (crl_dir / "root.crl").write_bytes(ent.crl("root"))  # DER works too
    extra = f"    crls: [{crl_dir / 'intermediate.crl'}, {crl_dir / 'root.crl'}]\n"
    path = write_manifest(tmp_path, ent, register_signing="register-signing-revoked", extra=extra)
    before = len(server.requests)
    code, sub = plan_json(cli, path, "--offline-revocation")
    assert len(server.requests) == before  # offline: not one request
    assert code == 1
    (error,) = findings(sub, "certificate-revocation")
    assert "is revoked" in error["message"] and "CRL file intermediate.crl" in error["message"]
    good = next(c for c in sub["certificates"] if c["role"] == "signing")
    assert good["revocation"] == "good" and "CRL file intermediate.crl" in good["revocationDetail"]


def test_unreachable_revocation_is_an_error_unless_offline_is_said_out_loud(
    cli, tmp_path: Path, dead: EnterprisePki
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, dead)
    code, sub = plan_json(cli, path)
    assert code == 1
    errors = findings(sub, "certificate-revocation")
    assert len(errors) == 4 and {e["severity"] for e in errors} == {"error"}
    assert DEAD_BASE in errors[0]["message"] and "--offline-revocation" in errors[0]["message"]
    assert sub["revocationNote"] == ""

    code, sub = plan_json(cli, path, "--offline-revocation")
    warnings = findings(sub, "certificate-revocation")
    assert len(warnings) == 4 and {w["severity"] for w in warnings} == {"warning"}
    assert "revocation NOT checked (--offline-revocation)" in warnings[0]["message"]
    assert sub["revocationNote"].startswith("OFFLINE REVOCATION (--offline-revocation): 4 ")
    assert "OFFLINE REVOCATION" in cli("plan", path, "--offline-revocation").out
    markdown = cli("plan", path, "--offline-revocation", "--format", "markdown").out
    assert "**Revocation:** ⚠️ OFFLINE REVOCATION" in markdown


def test_ocsp_answers_from_a_real_responder(tmp_path: Path) -> None:
    """The leaves name an `openssl ocsp` responder (AIA) and no distribution point."""
    port = free_port()
    pki = build_enterprise_pki(tmp_path / "pki", ocsp_url=f"http://127.0.0.1:{port}")
    pki.revoke("register-signing")
    inter = cert(pki.intermediate)
    checker = revocation.Checker()
    with ocsp_responder(pki, port):
        good = checker.check(cert(pki.certificate("municipality-signing")), inter, now())
        revoked = checker.check(cert(pki.certificate("register-signing")), inter, now())
    assert good.status is revocation.Status.GOOD, good.detail
    assert good.detail == f"not revoked (OCSP http://127.0.0.1:{port})"
    assert revoked.status is revocation.Status.REVOKED and "was revoked on" in revoked.detail
    # the responder is gone: unknown, with the reason, never a traceback
    gone = checker.check(cert(pki.certificate("municipality-signing")), inter, now())
    assert gone.status is revocation.Status.UNKNOWN
    assert f"OCSP http://127.0.0.1:{port}" in gone.detail


def test_certificates_without_revocation_sources_are_refused_in_production(
    cli, tmp_path: Path, sandbox_pki: PkiFiles
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path / "prod", sandbox_pki, environment="production")
    _code, sub = plan_json(cli, path)
    assert {f["severity"] for f in findings(sub, "certificate-revocation")} == {"error"}
    path = write_manifest(tmp_path / "test", sandbox_pki, environment="test")
    _code, sub = plan_json(cli, path)
    assert {f["severity"] for f in findings(sub, "certificate-revocation")} == {"warning"}
    assert {c["revocation"] for c in sub["certificates"]} == {"unpublished"}


def test_sandbox_plan_says_revocation_is_not_checked(cli, demo_copy: Path) -> None:  # type: ignore[no-untyped-def]
    _code, sub = plan_json(cli, demo_copy)
    assert "revocation is not checked" in sub["revocationNote"]
    assert not findings(sub, "certificate-revocation")


# --- receipts through the directory transport --------------------------------------------


def sent_lockfile(manifest: Manifest) -> lockfile.Part:
    lock = lockfile.new_lockfile(manifest.name)
    part = lockfile.Part(
        type="KPR_IPL",
        msg_id=str(uuid.uuid4()),
        payload_digest="sha256:" + "1" * 64,
        state="sent",
        size_bytes=1234,
        journaled_at="2024-01-20T08:00:00Z",
        sent_at="2024-01-20T08:00:01Z",
    )
    lock.attempts.append(
        lockfile.Attempt(
            number=1,
            created_at="2024-01-20T08:00:00Z",
            manifest_digest=manifest.digest,
            source_digest="sha256:" + "3" * 64,
            payload_digest="sha256:" + "4" * 64,
            summary={"recipients": 40},
            parts=[part],
        )
    )
    lockfile.save(manifest.lockfile_path, lock)
    return part


def apprec(part: lockfile.Part, manifest: Manifest) -> bytes:
    return build_apprec(
        version="1.0",
        msg_id=str(uuid.uuid4()),
        gen_date=now(),
        sender_name="KPR test",
        sender_her_id=REGISTER_HER_ID,
        receiver_name="Demo kommune",
        receiver_her_id=str(manifest.sender.her_id),
        status="1",
        errors=(),
        original_msg_type=part.type,
        original_msg_id=part.msg_id,
        original_issue_date=now() - dt.timedelta(hours=1),
    )


def deliver(root: Path, manifest: Manifest, body: bytes) -> None:
    """Put `body` in the directory transport's inbox, as the carrier would (.json last)."""
    queue = f"{manifest.sender.service_her_id}_async"
    message = OutgoingMessage(
        message_id=str(uuid.uuid4()),
        correlation_id=None,
        subject="APPREC",
        body=body,
        to_queue=queue,
        reply_to=None,
        application_properties={},
    )
    inbox = root / "bus" / "inbox" / queue
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{message.message_id}.p7m").write_bytes(body)
    (inbox / f"{message.message_id}.json").write_text(json.dumps(message_metadata(message)))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / ".iplosctl"))
    return tmp_path / ".iplosctl"


def signed_receipt(
    pki: EnterprisePki, signer: str, manifest: Manifest, part: lockfile.Part
) -> bytes:
    return sign_then_encrypt(
        apprec(part, manifest),
        signer_cert=cert(pki.certificate(signer)),
        signer_key=load_private_key(pki.key(signer), None),
        recipient_cert=cert(pki.certificate("municipality-encryption")),
    )


@pytest.mark.parametrize("signer", ["register-signing", "register-signing-revoked"])
def test_receipt_signed_by_a_revoked_certificate_is_quarantined(
    cli, tmp_path: Path, ent: EnterprisePki, state_dir: Path, signer: str
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, ent, register_signing=signer)
    manifest = load_manifest(path)
    part = sent_lockfile(manifest)
    deliver(tmp_path, manifest, signed_receipt(ent, signer, manifest, part))
    result = receipts.collect_receipts(manifest)
    state = lockfile.load(manifest.lockfile_path).attempts[0].parts[0].state  # type: ignore[union-attr]
    if signer == "register-signing":
        assert state == "accepted" and not result.quarantined
        return
    assert state == "sent"  # nothing recorded
    (entry,) = receipts.list_quarantine(manifest)
    assert entry.kind == receipts.UNVERIFIED
    assert "revoked" in entry.reason and "intermediate.crl" in entry.reason
    assert entry.path.read_bytes()  # kept, not lost


def test_receipts_refuse_an_unreachable_revocation_unless_offline(
    cli, tmp_path: Path, dead: EnterprisePki, state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path, dead, environment="qa")
    manifest = load_manifest(path)
    part = sent_lockfile(manifest)
    deliver(tmp_path, manifest, signed_receipt(dead, "register-signing", manifest, part))
    receipts.collect_receipts(manifest)
    (entry,) = receipts.list_quarantine(manifest)
    assert "could not be checked" in entry.reason and "--offline-revocation" in entry.reason
    # another copy of the receipt, with offline revocation said out loud: recorded
    deliver(tmp_path, manifest, signed_receipt(dead, "register-signing", manifest, part))
    run = cli("receipts", path, "--offline-revocation")
    assert run.code == 0, run.all
    assert "warning: --offline-revocation" in run.err
    assert lockfile.load(manifest.lockfile_path).attempts[0].parts[0].state == "accepted"  # type: ignore[union-attr]


def test_receipt_whose_chain_is_fixed_afterwards_is_recovered(
    tmp_path: Path, ent: EnterprisePki, no_eku: EnterprisePki, state_dir: Path
) -> None:
    """Quarantined as `unverified` while the trust anchor is wrong; the next `receipts`
    run after the manifest is fixed re-examines it (h6) and records it."""
    path = write_manifest(tmp_path, ent)
    right = path.read_text()
    path.write_text(right.replace(f"trustAnchors: {ent.root}", f"trustAnchors: {no_eku.root}"))
    manifest = load_manifest(path)
    part = sent_lockfile(manifest)
    deliver(tmp_path, manifest, signed_receipt(ent, "register-signing", manifest, part))
    receipts.collect_receipts(manifest)
    (entry,) = receipts.list_quarantine(manifest)
    assert entry.kind == receipts.UNVERIFIED and "does not chain to a trusted CA" in entry.reason
    assert lockfile.load(manifest.lockfile_path).attempts[0].parts[0].state == "sent"  # type: ignore[union-attr]

    path.write_text(right)  # the operator fixes the trust anchor
    fixed = load_manifest(path)
    result = receipts.collect_receipts(fixed)
    assert result.reexamined == 1
    assert lockfile.load(fixed.lockfile_path).attempts[0].parts[0].state == "accepted"  # type: ignore[union-attr]
    assert receipts.list_quarantine(fixed) == []


def test_a_revoked_receipt_stays_quarantined_when_re_examined(
    tmp_path: Path, ent: EnterprisePki, state_dir: Path
) -> None:
    path = write_manifest(tmp_path, ent, register_signing="register-signing-revoked")
    manifest = load_manifest(path)
    part = sent_lockfile(manifest)
    deliver(tmp_path, manifest, signed_receipt(ent, "register-signing-revoked", manifest, part))
    receipts.collect_receipts(manifest)
    result = receipts.collect_receipts(manifest)
    assert result.reexamined == 0
    (entry,) = receipts.list_quarantine(manifest)
    assert "revoked" in entry.reason
    assert lockfile.load(manifest.lockfile_path).attempts[0].parts[0].state == "sent"  # type: ignore[union-attr]


# --- 4. rotation: encryptionPrevious ----------------------------------------------------------


def test_receipt_encrypted_to_the_previous_certificate_is_decrypted(
    tmp_path: Path, ent: EnterprisePki, sandbox_pki: PkiFiles, state_dir: Path
) -> None:
    previous = sandbox_pki  # the key pair before the rotation
    extra = (
        "    encryptionPrevious:\n"
        f"      certificate: {previous.certificate('municipality-encryption')}\n"
        f"      key: {previous.key('municipality-encryption')}\n"
    )
    path = write_manifest(tmp_path, ent, extra=extra)
    manifest = load_manifest(path)
    part = sent_lockfile(manifest)
    body = sign_then_encrypt(
        apprec(part, manifest),
        signer_cert=cert(ent.certificate("register-signing")),
        signer_key=load_private_key(ent.key("register-signing"), None),
        recipient_cert=cert(previous.certificate("municipality-encryption")),
    )
    deliver(tmp_path, manifest, body)
    result = receipts.collect_receipts(manifest)
    assert not result.quarantined
    assert lockfile.load(manifest.lockfile_path).attempts[0].parts[0].state == "accepted"  # type: ignore[union-attr]

    # without encryptionPrevious the same receipt is refused, naming both sides
    with pytest.raises(CmsError) as refused:
        decrypt_then_verify(
            body,
            own_cert=cert(ent.certificate("municipality-encryption")),
            own_key=load_private_key(ent.key("municipality-encryption"), None),
            sender_certs=[cert(ent.certificate("register-signing"))],
            trust_anchors=[cert(ent.root)],
            now=now(),
        )
    assert refused.value.reason is Failure.NOT_FOR_US
    assert "encryptionPrevious" in refused.value.message


# --- 5. recipients named by subject key identifier ---------------------------------------------


def ski_envelope(tmp_path: Path, pki: EnterprisePki, recipient: Path) -> bytes:
    """`openssl cms -sign`, then `openssl cms -encrypt -keyid`: a SKI RecipientInfo."""
    content, signed, enveloped = (tmp_path / n for n in ("apprec.xml", "signed.der", "env.der"))
    content.write_bytes(b"<AppRec>ski</AppRec>\n")
    openssl(
        "cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-outform", "DER",
        "-in", content, "-out", signed, "-signer", pki.certificate("register-signing"),
        "-inkey", pki.key("register-signing"), "-certfile", pki.intermediate,
    )  # fmt: skip
    openssl(
        "cms", "-encrypt", "-binary", "-keyid", "-aes256", "-outform", "DER",
        "-in", signed, "-out", enveloped, recipient,
    )  # fmt: skip
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", enveloped).decode()
    assert "subjectKeyIdentifier" in printed  # really named by key id
    return enveloped.read_bytes()


def test_recipient_named_by_subject_key_identifier_is_decrypted(
    tmp_path: Path, no_eku: EnterprisePki
) -> None:
    # the intermediate travels inside the SignedData (-certfile), as senders often do
    blob = ski_envelope(tmp_path, no_eku, no_eku.certificate("municipality-encryption"))
    content = decrypt_then_verify(
        blob,
        own_cert=cert(no_eku.certificate("municipality-encryption")),
        own_key=load_private_key(no_eku.key("municipality-encryption"), None),
        sender_certs=[cert(no_eku.certificate("register-signing"))],
        trust_anchors=[cert(no_eku.root)],
        now=now(),
    )
    assert content == b"<AppRec>ski</AppRec>\n"


def test_recipient_key_id_of_someone_else_is_refused_precisely(
    tmp_path: Path, ent: EnterprisePki, sandbox_pki: PkiFiles
) -> None:
    other = sandbox_pki.certificate("municipality-encryption")
    blob = ski_envelope(tmp_path, ent, other)
    ski = cert(other).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    with pytest.raises(CmsError) as refused:
        decrypt_then_verify(
            blob,
            own_cert=cert(ent.certificate("municipality-encryption")),
            own_key=load_private_key(ent.key("municipality-encryption"), None),
            sender_certs=[cert(ent.certificate("register-signing"))],
            trust_anchors=[cert(ent.root)],
            now=now(),
        )
    assert refused.value.reason is Failure.NOT_FOR_US
    assert f"key id {ski.hex()}" in refused.value.message
    assert "damaged" not in refused.value.message


# --- apply: the same verdicts before anything is sent ------------------------------------------


def test_apply_sends_nothing_until_offline_revocation_is_said_out_loud(
    cli, tmp_path: Path, dead: EnterprisePki, state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    # about certificates, not the format: the receiver "agreed" to iplosctl's own (payload-format)
    path = write_manifest(tmp_path, dead, extra="  payloadFormatAgreement: iplosctl-export-v1\n")
    outbox = tmp_path / "bus" / "outbox"
    run = cli("apply", path, "--auto-approve", "--late")
    assert run.code == 1 and "Traceback" not in run.all
    assert "nothing was sent" in run.err
    assert not list(outbox.rglob("*.p7m")) and not load_manifest(path).lockfile_path.exists()
    run = cli("apply", path, "--auto-approve", "--late", "--offline-revocation")
    assert run.code == 0, run.all
    assert len(list(outbox.rglob("*.p7m"))) == 2


def test_a_pkcs12_certificate_without_its_passphrase_here_is_a_warning_not_an_error(
    cli, tmp_path: Path, ent: EnterprisePki, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A PR runner may plan without the key passphrases: it must not be blocked for that."""
    p12 = tmp_path / "signing.p12"
    openssl(
        "pkcs12", "-export", "-in", ent.certificate("municipality-signing"),
        "-inkey", ent.key("municipality-signing"), "-out", p12, "-passout", "pass:s3cret",
        "-keypbe", "AES-256-CBC", "-certpbe", "AES-256-CBC",
    )  # fmt: skip
    path = write_manifest(tmp_path, ent)
    text = path.read_text().replace(
        f"      certificate: {ent.certificate('municipality-signing')}\n"
        f"      key: {ent.key('municipality-signing')}\n",
        f"      certificate: {p12}\n      key: {p12}\n      passphraseSecret: demo-signing\n",
    )
    path.write_text(text)
    _code, sub = plan_json(cli, path)
    (warning,) = findings(sub, "certificate-chain")
    assert warning["severity"] == "warning"
    assert "signing certificate not checked" in warning["message"]
    monkeypatch.setenv("IPLOSCTL_SECRET_DEMO_SIGNING", "s3cret")
    _code, sub = plan_json(cli, path)
    assert not findings(sub, "certificate-chain")
    assert next(c for c in sub["certificates"] if c["role"] == "signing")["chain"] == "ok"


@pytest.mark.broker
def test_revoked_receipt_signer_through_rabbitmq_is_quarantined_and_leaves_the_queue(
    tmp_path: Path, ent: EnterprisePki, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iplosctl import plugins
    from iplosctl.plugins import TransportSettings
    from tests import broker

    service = random.randint(7_000_000, 7_999_999)
    monkeypatch.setenv("IPLOSCTL_SECRET_CERT_TEST_BROKER", broker.PASSWORD)
    amqp = (
        f'    transport: amqp\n    url: {broker.AMQP_URL}\n    namespace: ""\n'
        f"    username: {broker.USER}\n    credential: cert-test-broker\n"
        "    timeoutSeconds: 20\n"
    )
    path = write_manifest(tmp_path, ent, register_signing="register-signing-revoked", endpoint=amqp)
    path.write_text(path.read_text().replace("serviceHerId: 900101", f"serviceHerId: {service}"))
    manifest = load_manifest(path)
    part = sent_lockfile(manifest)
    queues = (f"{service}_async", f"{service}_error")
    for queue in queues:
        broker.declare_queue(queue)
    bus = plugins.load("transport", "amqp")(
        TransportSettings(
            url=broker.AMQP_URL, username=broker.USER, password=broker.PASSWORD, timeout_seconds=20
        )
    )
    try:
        body = signed_receipt(ent, "register-signing-revoked", manifest, part)
        message_id = str(uuid.uuid4())
        bus.send(
            OutgoingMessage(
                message_id=message_id,
                correlation_id=message_id,
                subject="APPREC",
                body=body,
                to_queue=queues[0],
                reply_to=f"{REGISTER_HER_ID}_async",
                application_properties={"fromHerId": REGISTER_HER_ID, "toHerId": str(service)},
            )
        )
        result = receipts.collect_receipts(manifest)
        assert len(result.quarantined) == 1
        (entry,) = receipts.list_quarantine(manifest)
        assert entry.kind == receipts.UNVERIFIED and "revoked" in entry.reason
        assert lockfile.load(manifest.lockfile_path).attempts[0].parts[0].state == "sent"  # type: ignore[union-attr]
        assert not list(bus.receive(queues[0], timeout=1.5))  # kept in quarantine, off the queue
    finally:
        bus.close()
        for queue in queues:
            broker.delete_queue(queue)


def test_problems_of_the_previous_encryption_certificate_only_warn(
    cli, tmp_path: Path, ent: EnterprisePki
) -> None:  # type: ignore[no-untyped-def]
    extra = (
        "    encryptionPrevious:\n"
        f"      certificate: {ent.certificate('expired')}\n"
        f"      key: {ent.key('expired')}\n"
    )
    _code, sub = plan_json(cli, write_manifest(tmp_path, ent, extra=extra))
    (validity,) = findings(sub, "certificate-validity")
    assert validity["severity"] == "warning"
    assert validity["message"].startswith("encryption previous certificate")
    certificate_errors = [
        f for f in sub["findings"] if f["severity"] == "error" and "certificate" in f["rule"]
    ]
    assert not certificate_errors
    assert [c["role"] for c in sub["certificates"]][-1] == "encryption previous"


def test_a_crl_is_fetched_once_per_process_until_it_is_ten_minutes_old(
    ent: EnterprisePki, server: CrlServer
) -> None:
    ticks = [1000.0]
    checker = revocation.Checker(cache={}, clock=lambda: ticks[0])
    leaf, inter = cert(ent.certificate("municipality-signing")), cert(ent.intermediate)
    before = server.requests.count("intermediate.crl")
    for _ in range(3):
        assert checker.check(leaf, inter, now()).status is revocation.Status.GOOD
    assert server.requests.count("intermediate.crl") == before + 1
    ticks[0] += revocation.CACHE_SECONDS + 1
    assert checker.check(leaf, inter, now()).status is revocation.Status.GOOD
    assert server.requests.count("intermediate.crl") == before + 2
