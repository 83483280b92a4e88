"""apply against the real broker: what arrives, what the lockfile says, what survives a crash."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from iplosctl import lockfile as lf
from iplosctl import plugins
from iplosctl.apply import apply_submission
from iplosctl.errors import TransportError
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.locking import submission_lock
from iplosctl.manifest import load_manifest
from iplosctl.payload.msghead import load_schemas, parse_msghead, validate_msghead
from iplosctl.plugins import TransportSettings
from iplosctl.sandbox.pki import generate_pki
from tests import broker
from tests.conftest import DEMO_EXPORT, REPO
from tests.manifest_text import CERTIFICATES, submission_head
from tests.reference import XSD_DIR

pytestmark = pytest.mark.broker
SECRET = "planted-amqp-secret-77"
TODAY = "2024-01-05"  # inside the 2023 reporting window


class Setup:
    def __init__(self, root: Path, queue: str, service_her_id: int) -> None:
        self.root, self.queue, self.service_her_id = root, queue, service_her_id
        self.manifest = root / "manifests" / "kommune-2023.yaml"
        self.lockfile = root / "manifests" / "kommune-2023.lock.yaml"
        self.pki = root / "pki"
        self.export = root / "exports" / "kommune-2023.xml"


def manifest_text(
    queue: str, her: int, *, url: str = "amqp://127.0.0.1:5672", user: str = broker.USER
) -> str:
    return (
        submission_head(environment="test", her_id=her - 1, service_her_id=her)
        + f"""  # About sending, not the format: the receiver "agreed" (payload-format).
  payloadFormatAgreement: iplosctl-export-v1
  testPersons: {{names: ["Test Testesen"]}}
  endpoint:
    transport: amqp
    url: {url}
    username: {user}
    credential: amqp-test
    receiverQueue: {queue}
    timeoutSeconds: 5
"""
        + CERTIFICATES
    )


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_TEST", broker.PASSWORD)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    her = random.randint(7_000_000, 7_999_999)
    queue = f"kpr-test-{her}"
    s = Setup(tmp_path, queue, her)
    (tmp_path / "manifests").mkdir()
    s.export.parent.mkdir()
    shutil.copy(DEMO_EXPORT, s.export)
    generate_pki(s.pki)
    s.manifest.write_text(manifest_text(queue, her))
    broker.declare_queue(queue)
    yield s
    broker.delete_queue(queue)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Transports in this test record their backoff sleeps here instead of sleeping."""
    recorded: list[float] = []
    real_load = plugins.load

    def load_without_sleeping(kind: str, name: str):  # type: ignore[no-untyped-def]
        found = real_load(kind, name)
        return functools.partial(found, sleep=recorded.append) if kind == "transport" else found

    monkeypatch.setattr(plugins, "load", load_without_sleeping)
    return recorded


def receive_all(queue: str, expected: int) -> list:  # type: ignore[type-arg]
    transport = plugins.load("transport", "amqp")(
        TransportSettings(url=broker.AMQP_URL, username=broker.USER, password=broker.PASSWORD)
    )
    got = []
    try:
        for delivery in transport.receive(queue, timeout=3 if expected else 1):
            got.append(delivery.message)
            delivery.accept()
            if len(got) >= expected > 0:
                break
    finally:
        transport.close()
    return got


def openssl(*args: str, data: bytes) -> bytes:
    proc = subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_apply_sends_both_parts_with_nhn_properties(cli, setup: Setup) -> None:
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 0, result.all
    assert SECRET not in result.all
    lock = lf.load(setup.lockfile)
    assert lock is not None
    (attempt,) = lock.attempts
    assert [(p.type, p.state) for p in attempt.parts] == [("KPR_IPL", "sent"), ("KPR_IDE", "sent")]
    messages = receive_all(setup.queue, 2)
    assert [m.subject for m in messages] == ["KPR_IPL", "KPR_IDE"]
    schema = load_schemas(XSD_DIR, [EXPORT_V1_XSD])
    for message, part in zip(messages, attempt.parts, strict=True):
        assert message.message_id == part.msg_id == message.correlation_id
        props = message.application_properties
        assert props["fromHerId"] == str(setup.service_her_id)
        assert props["toHerId"] == "8133973"
        assert props["applicationTimeStamp"].endswith("Z") and props["enqueuedTimeUtc"]
        assert all(isinstance(v, str) for v in props.values())
        pki = setup.pki
        signed = openssl(
            "-decrypt",
            "-inform",
            "DER",
            "-recip",
            str(pki / "register-encryption.pem"),
            "-inkey",
            str(pki / "register-encryption.key"),
            data=message.body,
        )
        msghead = openssl(
            "-verify",
            "-inform",
            "DER",
            "-binary",
            "-CAfile",
            str(pki / "ca.pem"),
            "-purpose",
            "any",
            data=signed,
        )
        validate_msghead(msghead, schema)
        info = parse_msghead(msghead)
        assert info.msg_id == part.msg_id and info.msg_type == part.type
        # What was signed is, byte for byte, the payload whose digest the plan showed.
        content = msghead[msghead.index(b"<Content>") + 9 : msghead.rindex(b"</Content>")]
        planned = b'<?xml version="1.0" encoding="UTF-8"?>\n' + content + b"\n"
        assert f"sha256:{hashlib.sha256(planned).hexdigest()}" == part.payload_digest
        payload = etree.fromstring(info.payload)
        ids = payload.findall(".//{urn:iplosctl:export:v1}PersonId")
        assert (len(ids) > 0) == (part.type == "KPR_IDE")


def test_a_sent_submission_is_never_sent_again(cli, setup: Setup) -> None:
    assert cli("apply", "--auto-approve", "--today", TODAY, setup.manifest).code == 0
    assert len(receive_all(setup.queue, 2)) == 2
    again = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert again.code == 1
    assert "is wait" in again.err and "never resend" in again.err
    assert receive_all(setup.queue, 0) == []


def test_wrong_password_leaves_the_lockfile_unchanged(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login fails in the transport's prepare(), before anything is journaled."""
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_TEST", SECRET)
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "check the username and the credential secret" in errors[0]
    assert SECRET not in result.all
    assert not setup.lockfile.exists()  # no attempt: nothing could have left
    # the next plan is still a plain submit, and the right password sends its ids
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_TEST", broker.PASSWORD)
    plan = json.loads(cli("plan", "--format", "json", "--today", TODAY, setup.manifest).out)
    assert plan["submissions"][0]["action"] == "submit"
    assert cli("apply", "--auto-approve", "--today", TODAY, setup.manifest).code == 0
    ids = [m.message_id for m in receive_all(setup.queue, 2)]
    assert ids == [p["msgId"] for p in plan["submissions"][0]["parts"]]


def _existing_lockfile(cli, setup: Setup) -> bytes:  # type: ignore[no-untyped-def]
    """An accepted-looking history to compare byte for byte: one applied attempt."""
    assert cli("apply", "--auto-approve", "--today", TODAY, setup.manifest).code == 0
    assert len(receive_all(setup.queue, 2)) == 2
    lock = lf.load(setup.lockfile)
    assert lock is not None
    for part in lock.attempts[0].parts:
        lf.transition(part, "rejected")
    lf.save(setup.lockfile, lock)  # so that the next plan is a resubmit
    return setup.lockfile.read_bytes()


def test_a_missing_secret_leaves_the_lockfile_byte_for_byte_unchanged(
    cli, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _existing_lockfile(cli, setup)
    monkeypatch.delenv("IPLOSCTL_SECRET_AMQP_TEST")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1 and "amqp-test" in result.err and "Traceback" not in result.all
    assert setup.lockfile.read_bytes() == before
    assert receive_all(setup.queue, 0) == []


def test_an_encrypted_key_without_passphrase_leaves_the_lockfile_unchanged(
    cli, setup: Setup
) -> None:
    from cryptography.hazmat.primitives import serialization

    before = _existing_lockfile(cli, setup)
    key_file = setup.pki / "municipality-signing.key"
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"only-the-operator-knows"),
        )
    )
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1 and "Traceback" not in result.all
    assert "municipality-signing.key" in result.err
    assert setup.lockfile.read_bytes() == before
    assert receive_all(setup.queue, 0) == []


def test_unknown_queue_is_a_clear_error(cli, setup: Setup) -> None:
    broker.delete_queue(setup.queue)
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1
    assert setup.queue in result.err and "Traceback" not in result.all
    broker.declare_queue(setup.queue)


def test_connection_refused_is_retried_then_one_line(
    cli, setup: Setup, sleeps: list[float]
) -> None:
    before = _existing_lockfile(cli, setup)
    setup.manifest.write_text(
        manifest_text(setup.queue, setup.service_her_id, url="amqp://127.0.0.1:1")
    )
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1
    assert len([ln for ln in result.err.splitlines() if ln.startswith("error:")]) == 1
    assert "127.0.0.1:1" in result.err and SECRET not in result.all
    assert len(sleeps) == 4  # five tries
    # refused before the first byte: nothing journaled, not one byte of the lockfile changed
    assert setup.lockfile.read_bytes() == before


def test_a_key_that_does_not_match_fails_before_connecting(
    cli, setup: Setup, sleeps: list[float]
) -> None:
    """Protecting overlaps with connecting, but a refused key still fails first, at once."""
    text = manifest_text(setup.queue, setup.service_her_id, url="amqp://127.0.0.1:1")
    setup.manifest.write_text(
        text.replace(
            "key: ../pki/municipality-signing.key", "key: ../pki/municipality-encryption.key"
        )
    )
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "does not belong to signing certificate" in errors[0]
    assert sleeps == []  # no connection was tried, so none was retried
    assert not setup.lockfile.exists()


def test_saved_plan_is_applied_exactly_or_refused_as_stale(cli, setup: Setup) -> None:
    saved = setup.root / "plan.json"
    assert cli("plan", "--out", saved, "--today", TODAY, setup.manifest).code == 0
    setup.export.write_text(
        setup.export.read_text().replace('<Service code="15">', '<Service code="1">', 1)
    )
    stale = cli("apply", "--today", TODAY, saved)
    assert stale.code == 1 and "plan is stale" in stale.err
    assert not setup.lockfile.exists()
    assert cli("plan", "--out", saved, "--today", TODAY, setup.manifest).code == 0
    ok = cli("apply", "--today", TODAY, saved)
    assert ok.code == 0, ok.all
    sent_ids = [p["msgId"] for p in json.loads(saved.read_text())["submissions"][0]["parts"]]
    assert [m.message_id for m in receive_all(setup.queue, 2)] == sent_ids


def test_no_terminal_and_no_auto_approve_refuses(cli, setup: Setup) -> None:
    result = cli("apply", "--today", TODAY, setup.manifest)
    assert result.code == 1 and "--auto-approve" in result.err
    assert not setup.lockfile.exists()


def test_a_second_apply_finds_the_lock_held(cli, setup: Setup) -> None:
    with submission_lock(setup.lockfile, "iplosctl apply (test)"):
        result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 1 and "lock held by iplosctl apply (test)" in result.err
    assert receive_all(setup.queue, 0) == []


@pytest.mark.parametrize("crash_at", ["journaled", "accepted"])
def test_sigkill_then_rerun_is_one_logical_submission(setup: Setup, crash_at: str) -> None:
    exe = str(Path(sys.executable).with_name("iplosctl"))
    env = {**os.environ, "IPLOSCTL_TEST_CRASH_AT": crash_at}
    args = [exe, "apply", "--auto-approve", "--today", TODAY, str(setup.manifest)]
    crashed = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO, check=False)
    assert crashed.returncode == -signal.SIGKILL
    lock = lf.load(setup.lockfile)  # parses after the kill
    assert lock is not None and lock.attempts[0].parts[0].state == "journaled"
    env.pop("IPLOSCTL_TEST_CRASH_AT")
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO, check=False)
    assert rerun.returncode == 0, rerun.stderr
    lock = lf.load(setup.lockfile)
    assert lock is not None and len(lock.attempts) == 1
    assert lock.attempts[0].states == {"sent"}
    ids = {p.type: p.msg_id for p in lock.attempts[0].parts}
    received = receive_all(setup.queue, 3 if crash_at == "accepted" else 2)
    # duplicates of one MsgId are allowed (the register drops them); a second MsgId is not
    assert {m.message_id for m in received} == set(ids.values())
    assert len(received) == (3 if crash_at == "accepted" else 2)


def test_apply_through_the_directory_transport(cli, setup: Setup) -> None:
    """Air-gapped sending: the same journaling, protected files in an outbox."""
    text = setup.manifest.read_text()
    start = text.index("  endpoint:")
    end = text.index("  certificates:")
    setup.manifest.write_text(
        text[:start] + "  endpoint: {transport: directory, url: ../outbox,"
        f" receiverQueue: {setup.queue}}}\n" + text[end:]
    )
    (setup.root / "outbox").mkdir()
    result = cli("apply", "--auto-approve", "--today", TODAY, setup.manifest)
    assert result.code == 0, result.all
    lock = lf.load(setup.lockfile)
    assert lock is not None and lock.attempts[0].states == {"sent"}
    for part in lock.attempts[0].parts:
        meta = json.loads(
            (setup.root / "outbox" / "outbox" / setup.queue / f"{part.msg_id}.json").read_text()
        )
        assert meta["subject"] == part.type
        body = (setup.root / "outbox" / "outbox" / setup.queue / f"{part.msg_id}.p7m").read_bytes()
        assert len(body) > 1000


def test_a_transport_plugin_without_prepare_still_sends(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prepare` is optional for third-party transports: the first send connects instead."""
    from iplosctl_transport_directory import DirectoryTransport

    monkeypatch.delattr(DirectoryTransport, "prepare")
    text = setup.manifest.read_text()
    start, end = text.index("  endpoint:"), text.index("  certificates:")
    setup.manifest.write_text(
        text[:start] + "  endpoint: {transport: directory, url: ../outbox,"
        f" receiverQueue: {setup.queue}}}\n" + text[end:]
    )
    (setup.root / "outbox").mkdir()
    result = apply_submission(load_manifest(setup.manifest), today=dt.date(2024, 1, 5))
    assert [p.type for p in result.sent] == ["KPR_IPL", "KPR_IDE"]
    assert len(list((setup.root / "outbox" / "outbox" / setup.queue).glob("*.p7m"))) == 2


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_broker_stopped_mid_apply_then_rerun_sends_each_msgid_once(
    setup: Setup, sleeps: list[float]
) -> None:
    """Stop RabbitMQ right after the first part is accepted; the rerun recovers the rest."""
    manifest = load_manifest(setup.manifest)
    stopped = False

    def stop_after_first(part: str, step: str) -> None:
        nonlocal stopped
        if step == "sent" and not stopped:
            stopped = True
            _rabbitmqctl("stop_app")

    try:
        with pytest.raises(TransportError):
            apply_submission(manifest, today=dt.date(2024, 1, 5), progress=stop_after_first)
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
    lock = lf.load(setup.lockfile)
    assert lock is not None
    assert [p.state for p in lock.attempts[0].parts] == ["sent", "journaled"]
    result = apply_submission(load_manifest(setup.manifest), today=dt.date(2024, 1, 5))
    assert [p.type for p in result.sent] == ["KPR_IDE"]  # the sent part is never resent
    lock = lf.load(setup.lockfile)
    assert lock is not None and len(lock.attempts) == 1
    received = receive_all(setup.queue, 2)
    assert sorted(m.message_id for m in received) == sorted(
        p.msg_id for p in lock.attempts[0].parts
    )
