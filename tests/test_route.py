"""Where a submission goes, and where its answers are read: overrides and the reviewer's view.

NHN recommends that a service may inherit its organisation's queues; then
`{serviceHerId}_async` / `_error` are never written to, so `endpoint.replyQueue` /
`errorQueue` override them, and plan (text, markdown, json) and status show the
resolved receiver, queues, broker and namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iplosctl import endpoint
from iplosctl.manifest import load_manifest
from tests.test_receipts import (  # noqa: F401  (offline, pki: fixtures)
    Env,
    FakeBus,
    apprec_body,
    collect,
    error_properties,
    offline,
    pki,
)
from tests.test_transport_security import TODAY, _manifest, env  # noqa: F401

ORG_ASYNC, ORG_ERROR = "900100_async", "900100_error"


def _with_queues(path: Path, indent: str = "    ") -> None:
    text = path.read_text()
    marker = "  endpoint:\n"
    assert marker in text
    path.write_text(
        text.replace(
            marker, f"{marker}{indent}replyQueue: {ORG_ASYNC}\n{indent}errorQueue: {ORG_ERROR}\n"
        )
    )


def test_receipts_read_the_overridden_queues(
    offline: tuple[Env, FakeBus],  # noqa: F811
) -> None:
    sub, bus = offline
    _with_queues(sub.manifest.path)
    sub.manifest = load_manifest(sub.manifest.path)
    ipl, ide = sub.part("KPR_IPL"), sub.part("KPR_IDE")
    bus.put(sub.reply_queue, apprec_body(sub, ipl))  # the service's own queue: not read now
    bus.put(ORG_ASYNC, apprec_body(sub, ipl))
    props = error_properties(ide, to_her_id=sub.manifest.sender.service_her_id)
    bus.put(ORG_ERROR, b"", props, subject="KPR_IDE")
    collect(sub)
    assert (sub.part("KPR_IPL").state, sub.part("KPR_IDE").state) == ("accepted", "transport-error")
    assert len(bus.queues[sub.reply_queue]) == 1  # untouched
    assert bus.queues[ORG_ASYNC] == bus.queues[ORG_ERROR] == []


@pytest.mark.usefixtures("env")
def test_apply_names_the_overridden_reply_queue(cli, tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    manifest = _manifest(tmp_path, environment="test", url="../outbox")
    _with_queues(manifest)
    result = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert result.code == 0, result.all
    metas = [json.loads(p.read_text()) for p in (tmp_path / "outbox").rglob("*.json")]
    assert len(metas) == 2
    assert {m["reply_to"] for m in metas} == {ORG_ASYNC}


@pytest.mark.usefixtures("env")
def test_plan_and_status_show_receiver_queues_broker_and_namespace(
    cli,
    tmp_path: Path,
) -> None:
    manifest = _manifest(tmp_path, environment="test", url="amqps://sb.test.nhn.no:5671")
    text = manifest.read_text().replace("    url: amqps://sb.test.nhn.no:5671\n", "")
    manifest.write_text(text)  # the profile's broker and namespace
    _with_queues(manifest)
    expected = {
        "receiverHerId": 8133973,
        "toQueue": "8133973_async",
        "replyQueue": ORG_ASYNC,
        "errorQueue": ORG_ERROR,
        "transport": "amqp",
        "broker": "amqps://sb.test.nhn.no:5671",
        "namespace": "NHNTESTServiceBus",
    }
    assert endpoint.route(load_manifest(manifest)).as_dict() == expected
    line = (
        "to HER-id 8133973 queue 8133973_async via amqp amqps://sb.test.nhn.no:5671, namespace "
        f"NHNTESTServiceBus; receipts from {ORG_ASYNC}, errors from {ORG_ERROR}"
    )
    planned = cli("plan", "--today", TODAY, manifest)
    assert f"  route: {line}" in planned.out
    markdown = cli("plan", "--today", TODAY, "--format", "markdown", manifest)
    assert f"**Route:** {line}" in markdown.out
    (s,) = json.loads(cli("plan", "--today", TODAY, "--format", "json", manifest).out)[
        "submissions"
    ]
    assert s["route"] == expected
    status = cli("status", "--today", TODAY, manifest)
    assert (
        "sends to:   HER-id 8133973 queue 8133973_async via amqp amqps://sb.test.nhn.no:5671, "
        "namespace NHNTESTServiceBus" in status.out
    )
    assert f"reads:      receipts {ORG_ASYNC}, errors {ORG_ERROR}" in status.out
    (st,) = json.loads(cli("status", "--today", TODAY, "--format", "json", manifest).out)[
        "submissions"
    ]
    assert st["route"] == expected


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("key", ["replyQueue", "errorQueue"])
def test_a_queue_override_must_be_a_bare_queue_name(
    cli,
    tmp_path: Path,
    key: str,
) -> None:
    manifest = _manifest(tmp_path, environment="test", url="../outbox")
    text = manifest.read_text().replace("  endpoint:\n", f"  endpoint:\n    {key}: a/b c\n")
    manifest.write_text(text)
    result = cli("validate", manifest)
    assert result.code == 1
    assert f"spec.endpoint.{key}" in result.err
