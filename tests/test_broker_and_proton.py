"""The build and the test broker, as `make test` sets them up (STACK.md §1, §2d, §7)."""

from __future__ import annotations

import subprocess

import proton
import pytest
from proton import ConnectionException
from proton.utils import BlockingConnection

from tests import broker


def test_proton_was_built_with_tls() -> None:
    # Without pkg-config and libssl-dev the sdist compiles an SSL stub and amqps is impossible.
    assert proton.SSL.present()


@pytest.mark.broker
def test_test_user_logs_in_with_plain() -> None:
    broker.connect(timeout=10).close()


@pytest.mark.broker
def test_wrong_password_is_refused() -> None:
    with pytest.raises(ConnectionException, match="unauthorized-access"):
        BlockingConnection(
            broker.AMQP_URL, user=broker.USER, password="wrong", allowed_mechs="PLAIN", timeout=10
        )


@pytest.mark.broker
def test_anonymous_login_is_disabled() -> None:
    with pytest.raises(ConnectionException, match="unauthorized-access"):
        BlockingConnection(broker.AMQP_URL, timeout=10)


@pytest.mark.broker
def test_broker_listens_on_loopback_only() -> None:
    # The management API reports "::" for its listener even when bound to 127.0.0.1,
    # so ask the kernel which addresses the broker's ports are bound to.
    sockets = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    bound = {}
    for line in sockets.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        bound.setdefault(port, set()).add(address)
    for port in ("5672", "15672", "25672"):
        assert bound.get(port), f"nothing listens on {port}"
        assert bound[port] <= {"127.0.0.1", "[::1]"}, (port, bound[port])
