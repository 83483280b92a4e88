"""Transport security (issue 12): no clear-text login, TLS 1.2 at least, the host-name check.

Real parts where the item is about them: a fake broker on loopback that speaks
the AMQP 1.0 SASL exchange and records what the client sends; a Python `ssl`
server limited to TLS 1.0/1.1; the CLI on manifests with the refused settings.
None of these tests needs RabbitMQ.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from iplosctl import transport_policy
from iplosctl.errors import TransportError
from iplosctl.plugins import TlsSettings, TransportSettings
from iplosctl.sandbox.pki import generate_pki
from iplosctl.transport_policy import endpoint_concerns, is_loopback, plaintext_refusal
from iplosctl_transport_amqp import AmqpTransport
from iplosctl_transport_amqp.connection import (
    BrokerEndpoint,
    insecure_mechs_allowed,
    open_connection,
)
from tests.conftest import DEMO_EXPORT
from tests.manifest_text import CERTIFICATES, submission_head
from tests.test_transport_amqp import Pki, _make_pki

USER, PASSWORD = "kommune-user", "Clear-Text-Pa55-7c1d"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
TODAY = "2024-01-05"


# --- the policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("broker.localhost", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("[::1]", True),
        ("::1", True),
        ("sb.test.nhn.no", False),
        ("10.0.0.5", False),
        ("localhost.example.org", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_loopback_is_decided_from_the_url_as_written(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_amqp_without_tls_is_refused_beyond_loopback_outside_the_sandbox() -> None:
    refusal = plaintext_refusal("amqp://sb.test.nhn.no:5672", sandbox=False)
    assert refusal is not None and "amqp:// (no TLS) to sb.test.nhn.no is refused" in refusal
    assert plaintext_refusal("amqp://sb.test.nhn.no:5672", sandbox=True) is None
    assert plaintext_refusal("amqp://127.0.0.1:5672", sandbox=False) is None
    assert plaintext_refusal("amqps://sb.test.nhn.no:5671", sandbox=False) is None


@pytest.mark.parametrize(
    ("production", "severity"), [(True, "error"), (False, "warning")], ids=["prod-qa", "test"]
)
def test_verify_peer_name_off_is_refused_in_production_and_warned_elsewhere(
    production: bool, severity: str
) -> None:
    (concern,) = endpoint_concerns(
        "amqps://sb.nhn.no:5671",
        environment="production" if production else "test",
        sandbox=False,
        production=production,
        verify_peer_name=False,
    )
    assert concern.severity == severity
    assert concern.path == ("spec", "endpoint", "tls", "verifyPeerName")
    assert (
        endpoint_concerns(
            "amqps://sb.nhn.no:5671",
            environment="production",
            sandbox=False,
            production=True,
            verify_peer_name=True,
        )
        == []
    )


def test_insecure_sasl_mechanisms_only_for_plain_amqp_to_loopback_or_sandbox() -> None:
    def allowed(url: str, sandbox: bool = False) -> bool:
        scheme, rest = url.split("://")
        host, port = rest.rsplit(":", 1)
        endpoint = BrokerEndpoint(scheme, host, int(port))
        return insecure_mechs_allowed(endpoint, TransportSettings(url, allow_plaintext=sandbox))

    assert allowed("amqp://127.0.0.1:5672")
    assert allowed("amqp://broker.example.org:5672", sandbox=True)
    assert not allowed("amqp://broker.example.org:5672")
    assert not allowed("amqps://localhost:5671")  # TLS: PLAIN is not "insecure" there


def test_the_plugin_refuses_amqp_beyond_loopback_before_any_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a caller that skips validation cannot make the plugin log in in clear."""
    with fake_sasl_broker() as fake:
        real = socket.getaddrinfo

        def resolve(host, *args, **kwargs):  # type: ignore[no-untyped-def]
            return real("127.0.0.1" if host == "broker.example.org" else host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        url = f"amqp://broker.example.org:{fake.port}"
        with pytest.raises(TransportError, match=r"amqp:// \(no TLS\) to broker\.example\.org"):
            AmqpTransport(TransportSettings(url, username=USER, password=PASSWORD))
        endpoint = BrokerEndpoint("amqp", "broker.example.org", fake.port)
        with pytest.raises(TransportError, match="is refused"):
            open_connection(endpoint, TransportSettings(url, username=USER, password=PASSWORD))
    assert fake.connections == 0


# --- a fake broker that records the SASL exchange ------------------------------------


def _frame(body: bytes) -> bytes:
    """One SASL frame (type 1, channel 0) around an encoded performative."""
    return struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body


#: sasl-mechanisms (0x40) offering PLAIN only: described list of one symbol
SASL_MECHANISMS = _frame(b"\x00\x53\x40\xc0\x08\x01\xa3\x05PLAIN")
#: sasl-outcome (0x44) code 1 (auth): ends the exchange quickly
SASL_OUTCOME_AUTH_FAILED = _frame(b"\x00\x53\x44\xc0\x03\x01\x50\x01")


class FakeSaslBroker:
    """Answers the SASL header, offers PLAIN, records every byte the client sends after it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.received = bytearray()
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        self.connections += 1
        with client:
            client.settimeout(5)
            try:
                header = client.recv(8)
                self.received += header
                if header != SASL_HEADER:
                    return
                client.sendall(SASL_HEADER + SASL_MECHANISMS)
                while len(self.received) < 4096:
                    data = client.recv(4096)
                    if not data:
                        break
                    self.received += data
                    if b"\x00\x53\x41" in self.received:  # sasl-init: the login was sent
                        client.sendall(SASL_OUTCOME_AUTH_FAILED)
                        break
            except OSError:
                pass
            finally:
                self.done.set()

    def close(self) -> None:
        self.listener.close()


@contextlib.contextmanager
def fake_sasl_broker() -> Iterator[FakeSaslBroker]:
    fake = FakeSaslBroker()
    try:
        yield fake
    finally:
        fake.close()


@pytest.mark.parametrize("allow", [True, False], ids=["insecure-allowed", "insecure-off"])
def test_proton_sends_plain_in_clear_only_when_insecure_mechanisms_are_allowed(
    allow: bool,
) -> None:
    """The fake broker sees the password exactly when `allow_insecure_mechs` is on; the
    policy turns it on only for loopback or the sandbox (test above)."""
    with fake_sasl_broker() as fake:
        endpoint = BrokerEndpoint("amqp", "127.0.0.1", fake.port)
        settings = TransportSettings(
            endpoint.url, username=USER, password=PASSWORD, timeout_seconds=3
        )
        with contextlib.suppress(Exception):
            open_connection(endpoint, settings, allow_insecure_mechs=allow).close()
        fake.done.wait(5)
    assert fake.received.startswith(SASL_HEADER)
    assert (PASSWORD.encode() in fake.received) is allow
    assert (USER.encode() in fake.received) is allow


# --- TLS 1.2 at least ----------------------------------------------------------------


class OldTlsServer:
    """A TLS server on loopback limited to TLS 1.0 and 1.1; records what arrives after."""

    def __init__(self, pki: Pki) -> None:
        with warnings.catch_warnings():  # TLSVersion.TLSv1/1_1 are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 needs level 0 for TLS < 1.2
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.version: str | None = None
        self.received = b""
        self.error = ""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            raw, _ = self.listener.accept()
        except OSError:
            return
        try:
            raw.settimeout(5)
            with self.context.wrap_socket(raw, server_side=True) as tls:
                self.version = tls.version()
                self.received = tls.recv(64)
        except (OSError, ssl.SSLError) as exc:
            self.error = str(exc)
        finally:
            self.done.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


def test_the_old_tls_server_really_speaks_tls_1_1(pki: Pki) -> None:
    """The control: a client that allows TLS 1.1 completes the handshake with the server
    below, so the refusal in the next test is the client's minimum, not a broken server."""
    server = OldTlsServer(pki)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = ssl.create_default_context(cafile=str(pki.ca_file))
            client.minimum_version = ssl.TLSVersion.TLSv1
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
        with (
            socket.create_connection(("127.0.0.1", server.port)) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1", "TLSv1.1")
            tls.sendall(b"ping")
        server.done.wait(5)
    finally:
        server.close()
    assert server.received == b"ping"


def test_a_server_limited_to_tls_1_0_and_1_1_fails_the_handshake_before_sasl(pki: Pki) -> None:
    server = OldTlsServer(pki)
    sleeps: list[float] = []
    settings = TransportSettings(
        f"amqps://localhost:{server.port}",
        username=USER,
        password=PASSWORD,
        tls=TlsSettings(ca_file=pki.ca_file),
        timeout_seconds=5,
    )
    try:
        with pytest.raises(TransportError) as caught:
            AmqpTransport(settings, sleep=sleeps.append).check_queue("900101_async")
        server.done.wait(5)
    finally:
        server.close()
    assert server.version is None, f"handshake completed with {server.version}"
    assert server.received == b""  # no SASL header, no login
    assert "older than 1.2" in caught.value.message
    assert PASSWORD not in caught.value.message
    assert sleeps == []  # not worth retrying


# --- validate, plan and apply --------------------------------------------------------


def _manifest(
    root: Path, *, environment: str, url: str, verify_peer_name: bool | None = None
) -> Path:
    """A complete manifest with real certificates and the demo export, in `root`."""
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "exports").mkdir(exist_ok=True)
    shutil.copy(DEMO_EXPORT, root / "exports" / "kommune-2023.xml")
    generate_pki(root / "pki")
    tls = "" if verify_peer_name is None else f"\n    tls: {{verifyPeerName: {verify_peer_name}}}"
    path = root / "manifests" / "kommune-2023.yaml"
    path.write_text(
        submission_head(environment=environment, her_id=900100, service_her_id=900101)
        + f"""  testPersons: {{names: ["Test Testesen"]}}
  endpoint:
    transport: {"amqp" if "://" in url else "directory"}
    url: {url}
    username: {USER}
    credential: amqp-test{tls}
"""
        + CERTIFICATES
        + """  # About transport, not the format: the receiver "agreed" (payload-format).
  payloadFormatAgreement: iplosctl-export-v1
"""
    )
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_TEST", PASSWORD)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))


def test_amqp_beyond_loopback_is_one_line_exit_1_in_validate_plan_and_apply(
    cli, tmp_path: Path, env: None
) -> None:
    with fake_sasl_broker() as fake:
        manifest = _manifest(tmp_path, environment="test", url="amqp://broker.example.org:5672")
        lockfile = manifest.with_name("kommune-2023.lock.yaml")
        for args in (
            ("validate",),
            ("plan", "--today", TODAY),
            ("apply", "--auto-approve", "--today", TODAY),
        ):
            result = cli(*args, manifest)
            assert result.code == 1, (args, result.all)
            refusals = [line for line in result.err.splitlines() if "is refused" in line]
            assert len(refusals) == 1, result.err
            assert "kommune-2023.yaml:19:" in refusals[0]  # the url line
            assert "spec.endpoint.url: amqp:// (no TLS) to broker.example.org" in refusals[0]
            assert "Traceback" not in result.all and PASSWORD not in result.all
            assert not lockfile.exists()
    assert fake.connections == 0


def test_amqp_to_loopback_and_in_the_sandbox_is_allowed(cli, tmp_path: Path, env: None) -> None:
    loopback = _manifest(tmp_path / "a", environment="test", url="amqp://127.0.0.1:5672")
    sandbox = _manifest(tmp_path / "b", environment="sandbox", url="amqp://broker.example.org:5672")
    for manifest in (loopback, sandbox):
        result = cli("validate", manifest)
        assert result.code == 0, result.all


@pytest.mark.parametrize("environment", ["production", "qa"])
def test_verify_peer_name_off_is_refused_in_production_and_qa(
    cli, tmp_path: Path, env: None, environment: str
) -> None:
    manifest = _manifest(
        tmp_path, environment=environment, url="amqps://sb.nhn.no:5671", verify_peer_name=False
    )
    for args in (("validate",), ("plan", "--today", TODAY), ("apply", "--auto-approve")):
        result = cli(*args, manifest)
        assert result.code == 1, (args, result.all)
        (line,) = [x for x in result.err.splitlines() if "verifyPeerName" in x]
        assert f"refused in the {environment} environment" in line
        assert not manifest.with_name("kommune-2023.lock.yaml").exists()


def test_verify_peer_name_off_is_warned_in_validate_plan_and_apply(
    cli, tmp_path: Path, env: None
) -> None:
    # the directory transport: apply runs to the end without a broker, and still warns
    (tmp_path / "outbox").mkdir()
    manifest = _manifest(tmp_path, environment="test", url="../outbox", verify_peer_name=False)
    warning = "tls.verifyPeerName: false turns off the broker's host-name check"

    validated = cli("validate", manifest)
    assert validated.code == 0, validated.all
    assert f"warning: {manifest}:" in validated.err and warning in validated.err

    for fmt in ("text", "markdown", "json"):
        planned = cli("plan", "--today", TODAY, "--format", fmt, manifest)
        assert planned.code == 0, planned.all
        assert warning in planned.err  # the command's own warning line
        assert warning in planned.out  # and a finding in the plan a reviewer reads
    (s,) = json.loads(cli("plan", "--today", TODAY, "--format", "json", manifest).out)[
        "submissions"
    ]
    finding = next(f for f in s["findings"] if f["rule"] == transport_policy.RULE_ID)
    assert finding["severity"] == "warning"

    applied = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert applied.code == 0, applied.all
    assert warning in applied.err


@pytest.mark.usefixtures("env")
def test_the_receive_limit_is_twice_the_message_limit_unless_the_manifest_says(
    tmp_path: Path,
) -> None:
    from iplosctl import endpoint
    from iplosctl.manifest import load_manifest

    path = _manifest(tmp_path, environment="test", url="amqps://sb.test.nhn.no:5671")
    settings = endpoint.transport_settings(load_manifest(path))
    assert settings.max_message_size == 2 * 20_000_000
    assert not settings.allow_plaintext
    path.write_text(
        path.read_text().replace("  endpoint:\n", "  endpoint:\n    maxMessageSizeBytes: 5000\n")
    )
    assert endpoint.transport_settings(load_manifest(path)).max_message_size == 5000
