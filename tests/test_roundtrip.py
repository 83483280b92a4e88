"""The whole loop through RabbitMQ with the sandbox register attached (issue 5):
apply → AppRec → lockfile, rejections, resubmissions, corrections, the error queue."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.identifiers import person_control_digits
from iplosctl.sandbox.attach import attach_in_thread
from iplosctl.sandbox.pki import generate_pki
from iplosctl.sandbox.register import Behaviour
from tests import broker
from tests.conftest import DEMO_EXPORT
from tests.test_apply import TODAY, manifest_text

pytestmark = pytest.mark.broker
REGISTER_HER_ID = 8133973  # KPR's test receiver in the 2023 profile
REGISTER_QUEUE = f"{REGISTER_HER_ID}_async"


class Loop:
    def __init__(self, root: Path, her: int) -> None:
        self.root, self.her = root, her
        self.manifest = root / "manifests" / "kommune-2023.yaml"
        self.lockfile = root / "manifests" / "kommune-2023.lock.yaml"
        self.export = root / "exports" / "kommune-2023.xml"
        self.pki = root / "pki"

    def write_manifest(self, *, extra: str = "") -> None:
        self.manifest.write_text(manifest_text(REGISTER_QUEUE, self.her) + extra)

    def lock(self) -> lf.Lockfile:
        lock = lf.load(self.lockfile)
        assert lock is not None
        return lock


@pytest.fixture
def loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    monkeypatch.setenv("IPLOSCTL_SECRET_AMQP_TEST", broker.PASSWORD)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    her = random.SystemRandom().randint(6_000_000, 6_999_999)
    made = Loop(tmp_path, her)
    (tmp_path / "manifests").mkdir()
    made.export.parent.mkdir()
    shutil.copy(DEMO_EXPORT, made.export)
    generate_pki(made.pki)
    made.write_manifest()
    queues = [REGISTER_QUEUE, f"{her}_async", f"{her}_error"]
    for queue in queues:
        broker.declare_queue(queue)
    yield made
    for queue in queues:
        broker.delete_queue(queue)


def register(loop: Loop, **behaviour: object):  # type: ignore[no-untyped-def]
    return attach_in_thread(
        url=broker.AMQP_URL,
        username=broker.USER,
        password=broker.PASSWORD,
        pki_dir=loop.pki,
        register_her_id=str(REGISTER_HER_ID),
        stop_after=None,
        behaviour=Behaviour(**behaviour),  # type: ignore[arg-type]
    )


def plan_action(cli, loop: Loop) -> dict:  # type: ignore[no-untyped-def, type-arg]
    result = cli("plan", "--format", "json", "--today", TODAY, loop.manifest)
    return json.loads(result.out)["submissions"][0]


def send_and_collect(cli, loop: Loop, *, code: int = 0) -> None:  # type: ignore[no-untyped-def]
    applied = cli("apply", "--auto-approve", "--today", TODAY, loop.manifest)
    assert applied.code == 0, applied.all
    collected = cli("receipts", "--wait", "20s", loop.manifest)
    assert collected.code == code, collected.all


def _break_one_person_id(export: Path) -> None:
    text = export.read_text()
    start = text.index("<PersonId>") + len("<PersonId>")
    pid = text[start : start + 11]
    _, k2 = person_control_digits(pid[:9])  # type: ignore[misc]
    wrong = pid[:10] + str((k2 + 1) % 10)
    export.write_text(text[:start] + wrong + text[start + 11 :])


def test_reject_resubmit_accept_then_correct(cli, loop: Loop) -> None:
    # 1. An invalid person id the pre-flight rule was told to ignore: the register says E31.
    _break_one_person_id(loop.export)
    loop.write_manifest(extra='  rules: {person-id: "off"}\n')
    with register(loop):
        send_and_collect(cli, loop, code=1)  # a rejected part fails the receipts run
        attempt = loop.lock().attempts[-1]
        states = {p.type: p.state for p in attempt.parts}
        assert states == {"KPR_IPL": "accepted", "KPR_IDE": "rejected"}
        ide = next(p for p in attempt.parts if p.type == "KPR_IDE")
        assert ide.receipt is not None and ide.receipt.status == "2"
        assert [e.code for e in ide.receipt.errors] == ["E31"]
        planned = plan_action(cli, loop)
        assert planned["action"] == "resubmit" and planned["attempt"] == 2
        assert planned["receiptErrors"][0]["code"] == "E31"

        # 2. Fix the export: the resubmission is accepted.
        shutil.copy(DEMO_EXPORT, loop.export)
        loop.write_manifest()
        send_and_collect(cli, loop)
        lock = loop.lock()
        assert len(lock.attempts) == 2 and lock.attempts[-1].accepted
        assert plan_action(cli, loop)["action"] == "no-op"

        # 3. Change the export after acceptance: a correction.
        loop.export.write_text(
            loop.export.read_text().replace('<Service code="15">', '<Service code="1">', 1)
        )
        planned = plan_action(cli, loop)
        assert planned["action"] == "correct" and planned["attempt"] == 3
        send_and_collect(cli, loop)
        assert loop.lock().attempts[-1].accepted
    message_ids = [p.msg_id for a in loop.lock().attempts for p in a.parts]
    assert len(message_ids) == len(set(message_ids)) == 6


def test_error_queue_marks_transport_error(cli, loop: Loop) -> None:
    with register(loop, error_queue_instead=True):
        applied = cli("apply", "--auto-approve", "--today", TODAY, loop.manifest)
        assert applied.code == 0, applied.all
        collected = cli("receipts", "--wait", "20s", loop.manifest)
    assert collected.code == 1, collected.all
    assert "transport-error" in collected.err
    parts = loop.lock().attempts[-1].parts
    assert {p.state for p in parts} == {"transport-error"}
    assert all(
        p.transport_error and p.transport_error["condition"].startswith("transport:") for p in parts
    )
    assert plan_action(cli, loop)["action"] == "resubmit"


def test_never_answered_keeps_waiting(cli, loop: Loop) -> None:
    with register(loop, never_answer=True):
        assert cli("apply", "--auto-approve", "--today", TODAY, loop.manifest).code == 0
        waited = cli("receipts", "--wait", "2s", loop.manifest)
    assert waited.code == 75 and "still waiting for 2 receipt(s)" in waited.err
    assert plan_action(cli, loop)["action"] == "wait"
