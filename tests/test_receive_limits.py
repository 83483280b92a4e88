"""Receiving links against the real broker: a size limit, and reads that wait for a transfer.

* A message larger than the receiver's limit is thrown away frame by frame as it
  arrives and rejected (RabbitMQ dead-letters it, as NHN's `{herId}_dl` queues do),
  never loaded whole: the receiving process's peak memory is measured against the
  same process reading an empty queue.
* A receipt still arriving when a read's timeout passes is waited for while its
  bytes keep coming (a throttled proxy makes the transfer outlast the timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from proton import Message

from iplosctl import receipts
from iplosctl.plugins import TransportSettings
from iplosctl_transport_amqp import AmqpTransport
from tests import broker
from tests.test_receipts import collect, make_env, pki  # noqa: F401  (pki: a fixture)
from tests.test_transport_amqp import wait_for_depth

pytestmark = pytest.mark.broker
MB = 1024 * 1024


def _declare(name: str, arguments: dict[str, str] | None = None) -> None:
    path = f"/queues/%2F/{urllib.parse.quote(name, safe='')}"
    body = {"durable": True, "auto_delete": False, "arguments": arguments or {}}
    broker.management("PUT", path, body)


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue that dead-letters rejected messages to `<queue>_dl`, like NHN's."""
    name = f"iplosctl-test-{uuid.uuid4().hex[:12]}"
    _declare(name + "_dl")
    _declare(name, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name + "_dl"})
    yield name
    broker.delete_queue(name)
    broker.delete_queue(name + "_dl")


def _publish(queue: str, size: int) -> None:
    conn = broker.connect(timeout=60)
    try:
        conn.create_sender(f"/amq/queue/{queue}").send(
            Message(id=str(uuid.uuid4()), body=os.urandom(size), inferred=True, durable=True)
        )
    finally:
        conn.close()


READER = """
import json, sys
from iplosctl.plugins import TransportSettings
from iplosctl_transport_amqp import AmqpTransport
url, user, password, queue, limit = sys.argv[1:6]
t = AmqpTransport(TransportSettings(url, username=user, password=password,
                                    timeout_seconds=60, max_message_size=int(limit)))
got = 0
for delivery in t.receive(queue, timeout=1.0):
    got += len(delivery.message.body)
    delivery.accept()
# VmHWM, not ru_maxrss: the latter survives exec and would count the forking parent
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print(json.dumps({"bytes": got, "refused": t.take_refusals(), "peak_kib": int(peak)}))
t.close()
"""


def _read_in_child(tmp_path: Path, queue: str, limit: int) -> tuple[dict, int]:  # type: ignore[type-arg]
    """Run READER in a fresh process; its output and its own peak RSS in KiB (VmHWM)."""
    script = tmp_path / "reader.py"
    script.write_text(READER)
    args = [broker.AMQP_URL, broker.USER, broker.PASSWORD, queue, str(limit)]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    return result, result["peak_kib"]


def test_an_oversized_message_is_dead_lettered_without_being_loaded(
    tmp_path: Path, queue: str
) -> None:
    size = 30 * MB
    _, baseline = _read_in_child(tmp_path, queue, MB)  # the same reader, empty queue
    _publish(queue, size)
    result, peak = _read_in_child(tmp_path, queue, MB)
    assert result["bytes"] == 0
    (line,) = result["refused"]
    assert f"on queue {queue}: over the 1,048,576 byte limit" in line
    assert "refused a message of 31,4" in line  # the whole encoded message, counted as it passed
    assert wait_for_depth(queue + "_dl", 1) == 1
    assert wait_for_depth(queue, 0) == 0
    grown = (peak - baseline) * 1024
    # loaded whole it would cost the body several times over (proton's buffer, the decoded
    # Message, bytes()); thrown away frame by frame it costs a few frames
    assert grown < size // 3, f"peak RSS grew by {grown:,} bytes for a {size:,} byte message"


def test_a_message_under_the_limit_is_read_whole(tmp_path: Path, queue: str) -> None:
    _publish(queue, 3 * MB)
    result, _ = _read_in_child(tmp_path, queue, 4 * MB)
    assert (result["bytes"], result["refused"]) == (3 * MB, [])


class SlowProxy:
    """Forwards to the broker; broker→client at about `rate` bytes/s (client→broker free)."""

    def __init__(self, rate: int) -> None:
        host, _, port = urllib.parse.urlsplit(broker.AMQP_URL).netloc.rpartition(":")
        self.upstream = (host, int(port or 5672))
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.rate), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        chunk = 16 * 1024
        try:
            while not self.stop.is_set():
                data = src.recv(chunk)
                if not data:
                    break
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def test_a_read_waits_for_a_receipt_still_in_transit(queue: str) -> None:
    """2 MB at 0.5 MB/s takes about 4 s, four times the read's 1 s timeout."""
    _publish(queue, 2 * MB)
    proxy = SlowProxy(rate=MB // 2)
    settings = TransportSettings(
        f"amqp://127.0.0.1:{proxy.port}",
        username=broker.USER,
        password=broker.PASSWORD,
        timeout_seconds=60,
    )
    try:
        with AmqpTransport(settings) as t:
            deliveries = list(t.receive(queue, timeout=1.0))
            assert [len(d.message.body) for d in deliveries] == [2 * MB]
            deliveries[0].accept()
    finally:
        proxy.close()


def test_receipts_reports_a_refused_message_in_one_line(
    tmp_path: Path,
    pki,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = make_env(tmp_path, pki, monkeypatch)
    text = made.manifest.path.read_text().replace(
        "    timeoutSeconds: 20\n", "    timeoutSeconds: 20\n    maxMessageSizeBytes: 1048576\n"
    )
    made.manifest.path.write_text(text)
    from iplosctl.manifest import load_manifest

    made.manifest = load_manifest(made.manifest.path)
    reply = made.reply_queue
    _declare(reply + "_dl")
    _declare(reply, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": reply + "_dl"})
    broker.declare_queue(made.error_queue)
    try:
        _publish(reply, 3 * MB)
        result = collect(made)
        assert result.outstanding == 2 and result.recorded == []
        assert "1 refused as too large" in receipts.summary_line(result)
        (line,) = [x for x in receipts.detail_lines(result) if "refused" in x]
        assert f"on queue {reply}: over the 1,048,576 byte limit" in line
        assert wait_for_depth(reply + "_dl", 1) == 1
        assert made.quarantine() == []  # never written to disk
    finally:
        for name in (reply, reply + "_dl", made.error_queue):
            broker.delete_queue(name)
