"""The directory transport: an outbox/inbox folder for air-gapped sending or manual upload."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from iplosctl import plugins
from iplosctl.errors import TransportError
from iplosctl.plugins import OutgoingMessage, TransportSettings
from iplosctl_transport_directory import DirectoryTransport

MESSAGE = OutgoingMessage(
    message_id="0b7e5f5e-3c7a-4a43-8d55-6a8a6f0c2b11",
    correlation_id="0b7e5f5e-3c7a-4a43-8d55-6a8a6f0c2b11",
    subject="KPR_IPL",
    body=b"\x30\x82\x01\x00 not really CMS \xff",
    to_queue="8117845_async",
    reply_to="8094867_async",
    application_properties={
        "toHerId": "8117845",
        "fromHerId": "8094867",
        "applicationTimeStamp": "2024-03-01T10:11:12Z",
        "cpaId": "5b6c1e1e-6f3a-4c43-9a0c-1f0d9f2b7a11",
    },
)


@pytest.fixture
def transport(tmp_path: Path) -> DirectoryTransport:
    return DirectoryTransport(TransportSettings(url=str(tmp_path)))


def outbox(root: Path, message: OutgoingMessage = MESSAGE) -> tuple[Path, Path]:
    folder = root / "outbox" / message.to_queue
    return folder / f"{message.message_id}.p7m", folder / f"{message.message_id}.json"


def carry_to_inbox(root: Path, queue: str, message: OutgoingMessage = MESSAGE) -> Path:
    """What the person or upload tool does: copy a pair into the inbox, .json last."""
    inbox = root / "inbox" / queue
    inbox.mkdir(parents=True, exist_ok=True)
    body, meta = outbox(root, message)
    shutil.copy(body, inbox / body.name)
    shutil.copy(meta, inbox / meta.name)
    return inbox


def test_plugin_is_registered_under_its_name() -> None:
    assert plugins.load("transport", "directory") is DirectoryTransport
    assert DirectoryTransport.name == "directory"


def test_send_writes_body_then_sorted_properties(tmp_path: Path, transport: DirectoryTransport):
    transport.send(MESSAGE)
    body, meta = outbox(tmp_path)
    assert body.read_bytes() == MESSAGE.body
    text = meta.read_text(encoding="utf-8")
    data = json.loads(text)
    assert data == {
        "format_version": 1,
        "message_id": MESSAGE.message_id,
        "correlation_id": MESSAGE.correlation_id,
        "subject": "KPR_IPL",
        "to_queue": "8117845_async",
        "reply_to": "8094867_async",
        "content_type": "application/pkcs7-mime; smime-type=signed-and-enveloped-data",
        "application_properties": dict(MESSAGE.application_properties),
        "body_file": f"{MESSAGE.message_id}.p7m",
        "body_size": len(MESSAGE.body),
        "body_sha256": hashlib.sha256(MESSAGE.body).hexdigest(),
    }
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # stable, reviewable
    # no temp files left behind
    assert sorted(p.name for p in body.parent.iterdir()) == sorted([body.name, meta.name])


def test_sending_the_same_message_again_changes_nothing(
    tmp_path: Path, transport: DirectoryTransport
) -> None:
    transport.send(MESSAGE)
    _, meta = outbox(tmp_path)
    before = meta.stat().st_mtime_ns, meta.read_bytes()
    transport.send(MESSAGE)
    assert (meta.stat().st_mtime_ns, meta.read_bytes()) == before


def test_same_message_id_with_another_body_is_refused(
    tmp_path: Path, transport: DirectoryTransport
) -> None:
    transport.send(MESSAGE)
    with pytest.raises(TransportError, match="different body") as caught:
        transport.send(replace(MESSAGE, body=b"other"))
    assert not caught.value.transient
    assert outbox(tmp_path)[0].read_bytes() == MESSAGE.body  # the first one is kept


def test_a_body_without_its_json_is_an_unfinished_send_and_is_completed(
    tmp_path: Path, transport: DirectoryTransport
) -> None:
    body, meta = outbox(tmp_path)
    body.parent.mkdir(parents=True)
    body.write_bytes(b"half-written by a crashed run")
    transport.send(MESSAGE)
    assert body.read_bytes() == MESSAGE.body
    assert json.loads(meta.read_text())["message_id"] == MESSAGE.message_id


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".hidden", "..", "a\\b"])
def test_names_that_would_escape_the_folder_are_refused(
    tmp_path: Path, transport: DirectoryTransport, bad: str
) -> None:
    with pytest.raises(TransportError, match="cannot be used as a file name"):
        transport.send(replace(MESSAGE, to_queue=bad))
    with pytest.raises(TransportError, match="cannot be used as a file name"):
        transport.send(replace(MESSAGE, message_id=bad))
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").rglob("*.json"))


def test_missing_folder_is_named(tmp_path: Path) -> None:
    t = DirectoryTransport(TransportSettings(url=str(tmp_path / "nope")))
    with pytest.raises(TransportError, match=r"nope does not exist: create it"):
        t.send(MESSAGE)
    with pytest.raises(TransportError, match=r"nope does not exist"):
        list(t.receive("8094867_async", timeout=0))


def test_file_url_is_accepted(tmp_path: Path) -> None:
    with DirectoryTransport(TransportSettings(url=tmp_path.as_uri())) as t:
        t.send(MESSAGE)
    assert outbox(tmp_path)[1].exists()


def test_receive_round_trip_and_accept_moves_to_processed(
    tmp_path: Path, transport: DirectoryTransport
) -> None:
    transport.send(MESSAGE)
    inbox = carry_to_inbox(tmp_path, "8094867_async")
    (delivery,) = list(transport.receive("8094867_async", timeout=0))
    got = delivery.message
    assert got.queue == "8094867_async"
    assert got.message_id == MESSAGE.message_id
    assert got.correlation_id == MESSAGE.correlation_id
    assert got.subject == "KPR_IPL"
    assert got.body == MESSAGE.body
    assert dict(got.application_properties) == dict(MESSAGE.application_properties)
    delivery.accept()
    assert sorted(p.name for p in inbox.iterdir()) == ["processed"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [
        f"{MESSAGE.message_id}.json",
        f"{MESSAGE.message_id}.p7m",
    ]
    assert list(transport.receive("8094867_async", timeout=0)) == []


def test_release_leaves_the_pair_and_order_is_by_name(
    tmp_path: Path, transport: DirectoryTransport
) -> None:
    ids = ["c-3", "a-1", "b-2"]
    for message_id in ids:
        message = replace(MESSAGE, message_id=message_id)
        transport.send(message)
        carry_to_inbox(tmp_path, "8094867_async", message)
    deliveries = list(transport.receive("8094867_async", timeout=0))
    assert [d.message.message_id for d in deliveries] == sorted(ids)
    for d in deliveries:
        d.release()
    assert [d.message.message_id for d in transport.receive("8094867_async", timeout=0)] == (
        sorted(ids)
    )
    deliveries[0].release()  # releasing twice is harmless
    with pytest.raises(RuntimeError, match="already released"):
        deliveries[0].accept()


def test_error_queue_message_without_body(tmp_path: Path, transport: DirectoryTransport) -> None:
    inbox = tmp_path / "inbox" / "8094867_error"
    inbox.mkdir(parents=True)
    (inbox / "e1.json").write_text(
        json.dumps(
            {
                "message_id": "e1",
                "subject": "KPR_IPL",
                "application_properties": {"errorCondition": "transport:invalid-field-value"},
            }
        )
    )
    (delivery,) = list(transport.receive("8094867_error", timeout=0))
    assert delivery.message.body == b""
    assert delivery.message.correlation_id is None
    assert delivery.message.application_properties == {
        "errorCondition": "transport:invalid-field-value"
    }
    delivery.accept()
    assert (inbox / "processed" / "e1.json").exists()


def test_damaged_inbox_files_are_named(tmp_path: Path, transport: DirectoryTransport) -> None:
    transport.send(MESSAGE)
    inbox = carry_to_inbox(tmp_path, "q")
    (inbox / f"{MESSAGE.message_id}.p7m").write_bytes(b"truncated")
    with pytest.raises(TransportError, match="does not match its body_sha256"):
        list(transport.receive("q", timeout=0))
    (inbox / f"{MESSAGE.message_id}.p7m").unlink()
    with pytest.raises(TransportError, match=r"body file .* is missing"):
        list(transport.receive("q", timeout=0))
    (inbox / f"{MESSAGE.message_id}.json").write_text("{not json")
    with pytest.raises(TransportError, match=r"\.json: cannot read the message properties"):
        list(transport.receive("q", timeout=0))


def test_temp_and_partial_files_in_the_inbox_are_ignored(
    tmp_path: Path, transport: DirectoryTransport
) -> None:
    inbox = tmp_path / "inbox" / "q"
    inbox.mkdir(parents=True)
    (inbox / ".x.json.abc.tmp").write_text("{}")
    (inbox / "orphan.p7m").write_bytes(b"body whose .json has not arrived yet")
    assert list(transport.receive("q", timeout=0)) == []
