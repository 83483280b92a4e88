"""Where the real test broker is: the values scripts/test-broker.sh configures.

The one description of that broker, for the tests and for benchmarks/apply_throughput.py.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import urllib.request
from typing import Any

from proton.utils import BlockingConnection

AMQP_URL = os.environ.get("IPLOSCTL_TEST_AMQP_URL", "amqp://127.0.0.1:5672")
USER = os.environ.get("IPLOSCTL_TEST_AMQP_USER", "iplosctl-test")
PASSWORD = os.environ.get("IPLOSCTL_TEST_AMQP_PASSWORD", "iplosctl-test-password")
HTTP = os.environ.get("IPLOSCTL_TEST_BROKER_HTTP", "http://127.0.0.1:15672")


def connect(timeout: float = 20, max_frame_size: int | None = None) -> BlockingConnection:
    """A plain proton connection as the test user (PLAIN, no TLS), as the plugin logs in.

    `max_frame_size` None keeps proton's default.
    """
    options = {} if max_frame_size is None else {"max_frame_size": max_frame_size}
    return BlockingConnection(
        AMQP_URL, user=USER, password=PASSWORD, allowed_mechs="PLAIN", timeout=timeout, **options
    )


def management(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call RabbitMQ's management API (loopback) as the test user."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(HTTP + "/api" + path, data=data, method=method)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _queue_path(name: str) -> str:
    return f"/queues/%2F/{urllib.parse.quote(name, safe='')}"


def declare_queue(name: str) -> None:
    management("PUT", _queue_path(name), {"durable": True, "auto_delete": False, "arguments": {}})


def purge_queue(name: str) -> None:
    management("DELETE", _queue_path(name) + "/contents")


def delete_queue(name: str) -> None:
    management("DELETE", _queue_path(name))


def queue_depth(name: str) -> int:
    info = management("GET", _queue_path(name))
    return int(info.get("messages", 0))
