"""receipts: AppRecs and error-queue messages recorded in the lockfile, crash-safely.

Broker tests talk to the real RabbitMQ (scripts/test-broker.sh) with HER-ids drawn
per test, so queue names never collide with other tests or users of the broker. The
other tests drive the same code through an in-memory transport; every receipt in
both is a real AppRec, signed and encrypted with a generated test PKI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iplosctl import endpoint, lockfile, plugins, receipts
from iplosctl.errors import IplosctlError, TransportError
from iplosctl.locking import LockHeldError, submission_lock
from iplosctl.manifest import Manifest, load_manifest
from iplosctl.payload.apprec import ERROR_OID, AppRecError, AppRecVersion, build_apprec
from iplosctl.payload.cms import load_certificate, load_private_key, sign_then_encrypt
from iplosctl.plugins import IncomingMessage, OutgoingMessage, TransportPlugin, TransportSettings
from iplosctl.sandbox.pki import PkiFiles, generate_pki
from tests import broker
from tests.conftest import DEMO_EXPORT, DEMO_MANIFEST

REGISTER_HER_ID = "8133973"  # KPR test, the `test` environment's receiver
SECRET_NAME = "test-broker"
#: an 11-digit number where a register might quote a person id
PERSON_ID = "05903813050"  # synthetic (Test-Norge), never a real person
GEN_DATE = dt.datetime(2024, 1, 20, 9, 30, tzinfo=dt.UTC)
#: the clock of every run here; inside the generated certificates' validity
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NOW_TEXT = NOW.isoformat().replace("+00:00", "Z")


# --- the submission under test ------------------------------------------------------


@dataclass
class Env:
    manifest: Manifest
    pki: PkiFiles
    state_dir: Path

    @property
    def lock_path(self) -> Path:
        return self.manifest.lockfile_path

    @property
    def reply_queue(self) -> str:
        return f"{self.manifest.sender.service_her_id}_async"

    @property
    def error_queue(self) -> str:
        return f"{self.manifest.sender.service_her_id}_error"

    def lock(self) -> lockfile.Lockfile:
        loaded = lockfile.load(self.lock_path)
        assert loaded is not None
        return loaded

    def part(self, part_type: str) -> lockfile.Part:
        return next(p for a in self.lock().attempts for p in a.parts if p.type == part_type)

    def quarantine(self) -> list[receipts.QuarantinedReceipt]:
        return receipts.list_quarantine(self.manifest)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return generate_pki(tmp_path_factory.mktemp("pki"))


def _her_id() -> int:
    return random.randint(1_000_000, 9_999_999)


def _manifest_text(pki: PkiFiles, her_id: int, service_her_id: int) -> str:
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    for pattern, value in (
        (r"environment: sandbox.*", "environment: test"),
        (r"\bherId: 900100.*", f"herId: {her_id}"),
        (r"serviceHerId: 900101.*", f"serviceHerId: {service_her_id}"),
    ):
        text, n = re.subn(pattern, value, text)
        assert n == 1, pattern
    leaf = {
        stem: (pki.certificate(stem), pki.key(stem))
        for stem in ("municipality-signing", "municipality-encryption")
    }
    return (
        text.rstrip("\n")
        + f"""
  endpoint:
    transport: amqp
    url: {broker.AMQP_URL}
    namespace: ""
    username: {broker.USER}
    credential: {SECRET_NAME}
    timeoutSeconds: 20
  certificates:
    signing:
      certificate: {leaf["municipality-signing"][0]}
      key: {leaf["municipality-signing"][1]}
    encryption:
      certificate: {leaf["municipality-encryption"][0]}
      key: {leaf["municipality-encryption"][1]}
    register:
      signing: {pki.certificate("register-signing")}
      encryption: {pki.certificate("register-encryption")}
      trustAnchors: {pki.ca}
  # The simulated register here reads iplosctl's own format: say it agreed (payload-format).
  payloadFormatAgreement: iplosctl-export-v1
"""
    )


def _write_lockfile(manifest: Manifest, *, state: str = "sent") -> None:
    lock = lockfile.new_lockfile(manifest.name)
    parts = [
        lockfile.Part(
            type=part_type,
            msg_id=str(uuid.uuid4()),
            payload_digest="sha256:" + digit * 64,
            state=state,
            size_bytes=1234,
            journaled_at="2024-01-20T08:00:00Z",
            sent_at="2024-01-20T08:00:01Z" if state == "sent" else "",
        )
        for part_type, digit in (("KPR_IPL", "1"), ("KPR_IDE", "2"))
    ]
    lock.attempts.append(
        lockfile.Attempt(
            number=1,
            created_at="2024-01-20T08:00:00Z",
            manifest_digest=manifest.digest,
            source_digest="sha256:" + "3" * 64,
            payload_digest="sha256:" + "4" * 64,
            summary={"recipients": 40},
            parts=parts,
        )
    )
    lockfile.save(manifest.lockfile_path, lock)


def make_env(
    root: Path,
    pki: PkiFiles,
    monkeypatch: pytest.MonkeyPatch,
    *,
    state: str = "sent",
    password: str = broker.PASSWORD,
) -> Env:
    """The demo manifest in `root`, moved to the `test` environment and the test broker."""
    (root / "manifests").mkdir(parents=True)
    (root / "examples" / "exports").mkdir(parents=True)
    shutil.copy(DEMO_EXPORT, root / "examples" / "exports" / DEMO_EXPORT.name)
    path = root / "manifests" / DEMO_MANIFEST.name
    her_id = _her_id()
    path.write_text(_manifest_text(pki, her_id, her_id + 1), encoding="utf-8")
    state_dir = root / ".iplosctl"
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(state_dir))
    monkeypatch.setenv("IPLOSCTL_SECRET_TEST_BROKER", password)
    manifest = load_manifest(path)
    _write_lockfile(manifest, state=state)
    return Env(manifest, pki, state_dir)


# --- messages as the register sends them -----------------------------------------------


def apprec_body(
    env: Env,
    part: lockfile.Part,
    *,
    status: str = "1",
    errors: Sequence[AppRecError] = (),
    version: AppRecVersion = "1.0",
    apprec_id: str | None = None,
    original_msg_id: str | None = None,
    signer: str = "register-signing",
) -> bytes:
    """A signed and encrypted AppRec for `part`, as KPR would put it on our async queue."""
    xml = build_apprec(
        version=version,
        msg_id=apprec_id or str(uuid.uuid4()),
        gen_date=GEN_DATE,
        sender_name="KPR test",
        sender_her_id=REGISTER_HER_ID,
        receiver_name="Demo kommune",
        receiver_her_id=str(env.manifest.sender.her_id),
        receiver_service_her_id=str(env.manifest.sender.service_her_id),
        status=status,
        errors=errors,
        original_msg_type=part.type,
        original_msg_id=original_msg_id or part.msg_id,
        original_issue_date=GEN_DATE - dt.timedelta(hours=1),
    )
    return sign_then_encrypt(
        xml,
        signer_cert=load_certificate(env.pki.certificate(signer)),
        signer_key=load_private_key(env.pki.key(signer), None),
        recipient_cert=load_certificate(env.pki.certificate("municipality-encryption")),
    )


def error_properties(
    part: lockfile.Part,
    condition: str = "transport:invalid-field-value",
    *,
    to_her_id: int | None = None,
) -> dict[str, str]:
    """An error-queue message's properties; `to_her_id` adds the HER-ids the register sets
    (`publish` adds them from the queue name)."""
    her_ids = {"fromHerId": REGISTER_HER_ID, "toHerId": str(to_her_id)} if to_her_id else {}
    return {
        **her_ids,
        "originalMessageId": part.msg_id,
        "receiverTimeStamp": "2024-01-20T09:31:00Z",
        "errorCondition": condition,
        "errorDescription": "toHerId does not match the receiver",
        "errorConditionData": "toHerId;fromHerId",
    }


E31 = AppRecError(
    code="E31",
    system=ERROR_OID,
    text="Pasientens fødselsnummer er feil",
    original_text=f"Fødselsnummer {PERSON_ID} i record 17",
)


# --- an in-memory transport ----------------------------------------------------------------


@dataclass
class FakeDelivery:
    message: IncomingMessage
    bus: FakeBus
    outcome: str | None = None

    def accept(self) -> None:
        self.outcome = "accepted"
        self.bus.queues[self.message.queue].remove(self.message)

    def release(self) -> None:
        self.outcome = "released"


@dataclass
class FakeBus:
    """Queues in memory; `before_receive` runs at each read (to make messages arrive later)."""

    name: str = "fake"
    queues: dict[str, list[IncomingMessage]] = field(default_factory=lambda: defaultdict(list))
    deliveries: list[FakeDelivery] = field(default_factory=list)
    before_receive: Callable[[str], None] | None = None
    connections: int = 0

    def put(
        self,
        queue: str,
        body: bytes = b"",
        props: Mapping[str, str] | None = None,
        subject: str = "APPREC",
    ) -> None:
        mid = str(uuid.uuid4())
        self.queues[queue].append(IncomingMessage(queue, mid, mid, subject, body, props or {}))

    def send(self, message: OutgoingMessage) -> None:
        raise AssertionError("receipts never sends")

    def receive(self, queue: str, *, timeout: float) -> Iterator[FakeDelivery]:
        if self.before_receive is not None:
            self.before_receive(queue)
        for message in list(self.queues[queue]):
            delivery = FakeDelivery(message, self)
            self.deliveries.append(delivery)
            yield delivery

    def close(self) -> None:
        pass


@pytest.fixture
def offline(tmp_path: Path, pki: PkiFiles, monkeypatch: pytest.MonkeyPatch) -> tuple[Env, FakeBus]:
    env = make_env(tmp_path, pki, monkeypatch)
    bus = FakeBus()

    @contextlib.contextmanager
    def connect(manifest: Manifest) -> Iterator[endpoint.Connection]:
        bus.connections += 1
        yield endpoint.Connection(
            bus,
            endpoint.load_keys(manifest),
            endpoint.addressing(manifest),  # type: ignore[arg-type]
        )

    monkeypatch.setattr(endpoint, "connect", connect)
    return env, bus


def collect(env: Env, **kwargs: object) -> receipts.ReceiptsResult:
    return receipts.collect_receipts(env.manifest, now=lambda: NOW, **kwargs)  # type: ignore[arg-type]


# --- no broker needed ---------------------------------------------------------------------


def test_without_a_lockfile_nothing_is_read(
    offline: tuple[Env, FakeBus],
) -> None:
    env, bus = offline
    env.lock_path.unlink()
    result = collect(env)
    assert result.nothing_to_do and "nothing was sent" in result.nothing_to_do
    assert bus.connections == 0
    assert receipts.summary_line(result).startswith("demo-2023: no attempt recorded")


def test_receipt_is_recorded_then_accepted(offline: tuple[Env, FakeBus]) -> None:
    env, bus = offline
    ipl = env.part("KPR_IPL")
    bus.put(env.reply_queue, apprec_body(env, ipl, apprec_id="rec-1"))
    serial = env.lock().serial
    result = collect(env)
    part = env.part("KPR_IPL")
    assert part.state == "accepted"
    assert part.receipt == lockfile.Receipt("1", "rec-1", "2024-01-20T09:30:00Z", [])
    assert part.receipt_at == NOW_TEXT
    assert [d.outcome for d in bus.deliveries] == ["accepted"]
    assert result.recorded == [receipts.RecordedPart("KPR_IPL", ipl.msg_id, "accepted", ())]
    assert (result.outstanding, result.serial) == (1, serial + 1)
    assert "1 recorded (KPR_IPL accepted)" in receipts.summary_line(result)
    assert "still waiting for 1 receipt(s)" in receipts.summary_line(result)


def test_a_failed_lockfile_write_releases_and_keeps_the_rest(
    offline: tuple[Env, FakeBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, bus = offline
    bus.put(env.reply_queue, apprec_body(env, env.part("KPR_IPL")))
    bus.put(env.reply_queue, apprec_body(env, env.part("KPR_IDE")))
    before = env.lock_path.read_bytes()

    def full_disk(path: Path, lock: lockfile.Lockfile) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(lockfile, "save", full_disk)
        with pytest.raises(IplosctlError, match=r"No space left on device.*stays on the queue"):
            collect(env)
    assert [d.outcome for d in bus.deliveries] == ["released"]
    assert env.lock_path.read_bytes() == before
    assert collect(env).outstanding == 0


def test_an_error_after_the_write_still_accepts(
    offline: tuple[Env, FakeBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, bus = offline
    bus.put(env.reply_queue, apprec_body(env, env.part("KPR_IPL")))

    def broken_report(self: object, result: receipts.ReceiptsResult) -> None:
        raise RuntimeError("bookkeeping bug")

    monkeypatch.setattr(receipts._Record, "report", broken_report)
    with pytest.raises(RuntimeError):
        collect(env)
    assert [d.outcome for d in bus.deliveries] == ["accepted"]
    assert env.part("KPR_IPL").state == "accepted"


def test_a_receipt_for_a_journaled_part_moves_it_through_sent(
    offline: tuple[Env, FakeBus],
) -> None:
    env, bus = offline
    _write_lockfile(env.manifest, state="journaled")
    bus.put(env.reply_queue, apprec_body(env, env.part("KPR_IDE"), status="3"))
    result = collect(env)
    assert env.part("KPR_IDE").state == "accepted-with-errors"
    assert env.part("KPR_IPL").state == "journaled"
    assert result.outstanding == 1


def test_a_contradicting_receipt_is_quarantined(offline: tuple[Env, FakeBus]) -> None:
    env, bus = offline
    ipl = env.part("KPR_IPL")
    bus.put(env.reply_queue, apprec_body(env, ipl, status="1"))
    collect(env)
    serial = env.lock().serial
    bus.put(env.reply_queue, apprec_body(env, ipl, status="2", errors=[E31]))
    bus.put(env.reply_queue, apprec_body(env, ipl, status="1"))  # same verdict, new id
    result = collect(env)
    assert env.part("KPR_IPL").state == "accepted"
    assert env.lock().serial == serial
    assert result.duplicates == 1
    (entry,) = env.quarantine()
    assert entry.kind == receipts.CONFLICT
    assert "says rejected" in entry.reason and "already accepted" in entry.reason
    assert not bus.queues[env.reply_queue]


def test_wrong_signer_unknown_status_and_a_crashing_parser_are_quarantined(
    offline: tuple[Env, FakeBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, bus = offline
    ipl = env.part("KPR_IPL")
    bus.put(env.reply_queue, apprec_body(env, ipl, signer="municipality-signing"))
    collect(env)
    bus.put(env.reply_queue, apprec_body(env, ipl))

    def crash(xml: bytes) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(receipts.decide, "parse_apprec", crash)  # where the run parses
    collect(env)
    reasons = {q.kind: q.reason for q in env.quarantine()}
    assert set(reasons) == {receipts.UNVERIFIED, receipts.MALFORMED}
    assert "not registered for this sender" in reasons[receipts.UNVERIFIED]
    assert reasons[receipts.MALFORMED] == "could not be parsed (RuntimeError)"
    assert env.part("KPR_IPL").state == "sent"
    assert not bus.queues[env.reply_queue]


def test_error_queue_message_without_the_properties_is_quarantined(
    offline: tuple[Env, FakeBus],
) -> None:
    env, bus = offline
    bus.put(env.error_queue, b"", {"errorCondition": "transport:internal-error"})
    result = collect(env)
    (entry,) = env.quarantine()
    assert entry.kind == receipts.UNEXPECTED
    assert entry.queue == env.error_queue
    assert result.quarantined == [entry.path]
    meta = json.loads(entry.metadata_path.read_text())
    assert meta["amqp"]["applicationProperties"] == {"errorCondition": "transport:internal-error"}


def test_the_same_message_is_quarantined_once(offline: tuple[Env, FakeBus]) -> None:
    env, bus = offline
    bus.put(env.reply_queue, b"garbage")
    message = bus.queues[env.reply_queue][0]
    collect(env)
    bus.queues[env.reply_queue].append(message)  # delivered again after a crash
    collect(env)
    assert len(env.quarantine()) == 1
    assert len(list(receipts.quarantine_dir(env.manifest).iterdir())) == 2


def test_an_unmatched_receipt_is_adopted_once_its_part_is_known(
    offline: tuple[Env, FakeBus],
) -> None:
    """Another submission's run (or a lockfile not yet pulled) quarantines it; ours records it."""
    env, bus = offline
    ipl = env.part("KPR_IPL")
    lock = env.lock()
    lock.attempts[0].parts = [p for p in lock.attempts[0].parts if p.type != "KPR_IPL"]
    lockfile.save(env.lock_path, lock)
    bus.put(env.reply_queue, apprec_body(env, ipl, apprec_id="late"))
    collect(env)
    (entry,) = env.quarantine()
    assert (entry.kind, entry.original_msg_id) == (receipts.UNMATCHED, ipl.msg_id)
    lock = env.lock()
    lock.attempts[0].parts.insert(0, ipl)
    lockfile.save(env.lock_path, lock)
    result = collect(env)
    assert env.part("KPR_IPL").receipt.receipt_id == "late"  # type: ignore[union-attr]
    assert [r.type for r in result.recorded] == ["KPR_IPL"]
    assert env.quarantine() == []
    assert list(receipts.quarantine_dir(env.manifest).iterdir()) == []


def test_wait_polls_until_every_part_is_answered(offline: tuple[Env, FakeBus]) -> None:
    env, bus = offline
    clock = [0.0]
    sleeps: list[float] = []
    lines: list[str] = []
    reads = [0]

    def arrive_late(queue: str) -> None:
        if queue == env.reply_queue:
            reads[0] += 1
            if reads[0] == 3:
                bus.put(queue, apprec_body(env, env.part("KPR_IPL")))
                bus.put(queue, apprec_body(env, env.part("KPR_IDE"), status="2", errors=[E31]))

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    bus.before_receive = arrive_late
    result = collect(
        env,
        wait_seconds=600,
        poll_seconds=5,
        sleep=sleep,
        clock=lambda: clock[0],
        progress=lines.append,
    )
    assert result.outstanding == 0
    assert sleeps == [5, 5]
    assert lines == [
        "demo-2023: waiting for 2 receipt(s), 10m00s left",
        "demo-2023: waiting for 2 receipt(s), 9m55s left",
    ]
    assert env.part("KPR_IDE").state == "rejected"


def test_wait_ends_when_the_time_is_up(offline: tuple[Env, FakeBus]) -> None:
    env, _bus = offline
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    result = collect(env, wait_seconds=7, poll_seconds=2, sleep=sleep, clock=lambda: clock[0])
    assert result.outstanding == 2
    assert clock[0] == 7  # the last nap is cut to what is left
    assert receipts.summary_line(result).endswith(
        "0 recorded; still waiting for 2 receipt(s) (lockfile serial 1)"
    )


def test_another_holder_of_the_lock_is_refused(offline: tuple[Env, FakeBus]) -> None:
    env, bus = offline
    with submission_lock(env.lock_path, "iplosctl apply"), pytest.raises(LockHeldError):
        collect(env)
    assert bus.connections == 0


def test_printed_lines_show_codes_and_dn_never_ot_or_ids(offline: tuple[Env, FakeBus]) -> None:
    env, bus = offline
    text_with_id = AppRecError("X99", ERROR_OID, f"Annen feil for {PERSON_ID}", "OT here")
    bus.put(
        env.reply_queue,
        apprec_body(env, env.part("KPR_IPL"), status="2", errors=[E31, text_with_id]),
    )
    bus.put(
        env.error_queue,
        b"",
        {
            **error_properties(env.part("KPR_IDE"), to_her_id=env.manifest.sender.service_her_id),
            "errorDescription": f"bad person {PERSON_ID}",
        },
        subject="KPR_IDE",
    )
    result = collect(env)
    printed = "\n".join([receipts.summary_line(result), *receipts.detail_lines(result)])
    assert "E31: Pasientens fødselsnummer er feil" in printed
    assert "X99: Annen feil for [id]" in printed
    assert "transport-error transport:invalid-field-value" in printed
    assert PERSON_ID not in printed and "OT here" not in printed and "record 17" not in printed
    # codes as sent; DN, OT and the error description scrubbed before the lockfile (issue 12)
    recorded = env.part("KPR_IPL").receipt.errors  # type: ignore[union-attr]
    assert [e.code for e in recorded] == ["E31", "X99"]
    assert recorded[0].original_text == "Fødselsnummer [id] i record 17"
    assert env.part("KPR_IDE").transport_error["description"] == "bad person [id]"  # type: ignore[index]


@pytest.mark.parametrize("sep", ["", " ", ".", "-", "/"])
def test_register_texts_reach_the_lockfile_scrubbed_in_every_separator_form(
    offline: tuple[Env, FakeBus], sep: str
) -> None:
    """AppRec DN and OT and the error queue's description and data are text from outside:
    the committed lockfile holds them only through `privacy.scrub` (issue 12)."""
    env, bus = offline
    written = PERSON_ID[:6] + sep + PERSON_ID[6:]
    quoting = AppRecError("E31", ERROR_OID, f"DN om {written}", f"OT: PersonId {written} feil")
    bus.put(
        env.reply_queue,
        apprec_body(env, env.part("KPR_IPL"), status="2", errors=[quoting]),
    )
    bus.put(
        env.error_queue,
        b"",
        {
            **error_properties(env.part("KPR_IDE"), to_her_id=env.manifest.sender.service_her_id),
            "errorDescription": f"person {written} unknown",
            "errorConditionData": f"PersonId={written}",
        },
        subject="KPR_IDE",
    )
    result = collect(env)
    assert len(result.recorded) == 1 and len(result.transport_errors) == 1
    text = env.lock_path.read_text(encoding="utf-8")
    assert written not in text and PERSON_ID not in text
    assert "DN om [id]" in text and "OT: PersonId [id] feil" in text
    assert "person [id] unknown" in text and "PersonId=[id]" in text
    assert "E31" in text


# --- the real broker ---------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, pki: PkiFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    made = make_env(tmp_path, pki, monkeypatch)
    queues = (made.reply_queue, made.error_queue)
    for queue in queues:
        broker.declare_queue(queue)
    try:
        yield made
    finally:
        for queue in queues:
            broker.delete_queue(queue)


def _settings() -> TransportSettings:
    return TransportSettings(
        url=broker.AMQP_URL, username=broker.USER, password=broker.PASSWORD, timeout_seconds=20
    )


@pytest.fixture
def bus() -> Iterator[TransportPlugin]:
    transport = plugins.load("transport", "amqp")(_settings())
    try:
        yield transport
    finally:
        transport.close()


def publish(
    bus: TransportPlugin,
    queue: str,
    body: bytes,
    props: Mapping[str, str] | None = None,
    subject: str = "APPREC",
) -> str:
    message_id = str(uuid.uuid4())
    bus.send(
        OutgoingMessage(
            message_id=message_id,
            correlation_id=message_id,
            subject=subject,
            body=body,
            to_queue=queue,
            reply_to=f"{REGISTER_HER_ID}_async",
            application_properties={
                "fromHerId": REGISTER_HER_ID,
                "toHerId": queue.split("_")[0],
                "applicationTimeStamp": "2024-01-20T09:30:00Z",
                **(props or {}),
            },
        )
    )
    return message_id


def on_queue(queue: str) -> int:
    """Messages waiting on `queue`, counted by reading (and releasing) them: the management
    API's counts lag by up to 5 s."""
    transport = plugins.load("transport", "amqp")(_settings())
    try:
        count = 0
        for delivery in transport.receive(queue, timeout=1.5):
            count += 1
            delivery.release()
        return count
    finally:
        transport.close()


@pytest.mark.broker
@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_status_1_is_accepted_and_leaves_the_queue(
    env: Env, bus: TransportPlugin, version: AppRecVersion
) -> None:
    ipl = env.part("KPR_IPL")
    publish(bus, env.reply_queue, apprec_body(env, ipl, version=version, apprec_id="ok-1"))
    result = collect(env)
    part = env.part("KPR_IPL")
    assert part.state == "accepted"
    assert part.receipt == lockfile.Receipt("1", "ok-1", "2024-01-20T09:30:00Z", [])
    assert result.recorded == [receipts.RecordedPart("KPR_IPL", ipl.msg_id, "accepted", ())]
    assert (result.outstanding, result.duplicates, result.quarantined) == (1, 0, [])
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_status_2_records_e31_code_as_sent_and_its_texts_scrubbed(
    env: Env, bus: TransportPlugin
) -> None:
    publish(
        bus,
        env.reply_queue,
        apprec_body(env, env.part("KPR_IDE"), status="2", errors=[E31], version="1.1"),
    )
    result = collect(env)
    part = env.part("KPR_IDE")
    assert part.state == "rejected"
    assert part.receipt is not None and part.receipt.status == "2"
    assert part.receipt.errors == [
        lockfile.ReceiptError(
            "E31",
            ERROR_OID,
            "Pasientens fødselsnummer er feil",
            "Fødselsnummer [id] i record 17",  # OT quoted an id: the lockfile is committed
        )
    ]
    assert result.recorded[0].codes == ("E31",)
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_status_3_is_accepted_with_errors(env: Env, bus: TransportPlugin) -> None:
    partial = AppRecError("X99", ERROR_OID, "Annen feil", "record 3")
    publish(
        bus, env.reply_queue, apprec_body(env, env.part("KPR_IPL"), status="3", errors=[partial])
    )
    collect(env)
    part = env.part("KPR_IPL")
    assert part.state == "accepted-with-errors"
    assert part.receipt.errors[0].code == "X99"  # type: ignore[union-attr]


@pytest.mark.broker
def test_a_duplicate_receipt_changes_nothing_and_is_accepted(
    env: Env, bus: TransportPlugin
) -> None:
    body = apprec_body(env, env.part("KPR_IPL"), apprec_id="twice")
    publish(bus, env.reply_queue, body)
    publish(bus, env.reply_queue, body)
    result = collect(env)
    assert (len(result.recorded), result.duplicates) == (1, 1)
    recorded = env.lock_path.read_bytes()
    publish(bus, env.reply_queue, body)
    again = collect(env)
    assert (again.recorded, again.duplicates) == ([], 1)
    assert env.lock_path.read_bytes() == recorded
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_a_receipt_for_an_unknown_message_is_quarantined(env: Env, bus: TransportPlugin) -> None:
    stranger = str(uuid.uuid4())
    body = apprec_body(env, env.part("KPR_IPL"), original_msg_id=stranger)
    amqp_id = publish(bus, env.reply_queue, body)
    before = env.lock_path.read_bytes()
    result = collect(env)
    (entry,) = env.quarantine()
    assert result.quarantined == [entry.path]
    assert entry.path.read_bytes() == body
    assert (entry.kind, entry.original_msg_id, entry.message_id) == (
        receipts.UNMATCHED,
        stranger,
        amqp_id,
    )
    assert entry.path.parent == env.state_dir / "quarantine" / "demo-2023"
    assert re.fullmatch(r"\d{8}T\d{6}Z-" + re.escape(amqp_id) + r"\.p7m", entry.path.name)
    meta = json.loads(entry.metadata_path.read_text())
    assert meta["amqp"]["applicationProperties"]["fromHerId"] == REGISTER_HER_ID
    assert env.lock_path.read_bytes() == before
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_garbage_is_quarantined(env: Env, bus: TransportPlugin) -> None:
    publish(bus, env.reply_queue, b"<not>CMS</not>")
    result = collect(env)
    (entry,) = env.quarantine()
    assert entry.kind == receipts.UNVERIFIED
    assert "not DER-encoded CMS" in entry.reason
    assert len(result.quarantined) == 1
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_an_error_queue_message_marks_the_part_transport_error(
    env: Env, bus: TransportPlugin
) -> None:
    ide = env.part("KPR_IDE")
    publish(
        bus,
        env.error_queue,
        b"",
        error_properties(ide, "transport:invalid-certificate"),
        subject=ide.type,
    )
    result = collect(env)
    part = env.part("KPR_IDE")
    assert part.state == "transport-error"
    assert part.transport_error == {
        "condition": "transport:invalid-certificate",
        "description": "toHerId does not match the receiver",
        "data": "toHerId;fromHerId",
    }
    assert result.transport_errors == [
        receipts.RecordedPart(
            "KPR_IDE", ide.msg_id, "transport-error", ("transport:invalid-certificate",)
        )
    ]
    assert on_queue(env.error_queue) == 0


@pytest.mark.broker
def test_an_unmatched_error_queue_message_is_quarantined(env: Env, bus: TransportPlugin) -> None:
    stranger = lockfile.Part("KPR_IPL", str(uuid.uuid4()), "sha256:x")
    publish(bus, env.error_queue, b"", error_properties(stranger))
    collect(env)
    (entry,) = env.quarantine()
    assert (entry.kind, entry.queue, entry.original_msg_id) == (
        receipts.UNMATCHED,
        env.error_queue,
        stranger.msg_id,
    )
    assert on_queue(env.error_queue) == 0


@pytest.mark.broker
def test_a_failed_lockfile_write_leaves_the_receipt_on_the_queue(
    env: Env, bus: TransportPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(bus, env.reply_queue, apprec_body(env, env.part("KPR_IPL")))
    before = env.lock_path.read_bytes()

    def read_only(path: Path, lock: lockfile.Lockfile) -> None:
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patched:
        patched.setattr(lockfile, "save", read_only)
        with pytest.raises(IplosctlError, match="Permission denied"):
            collect(env)
    assert env.lock_path.read_bytes() == before
    assert on_queue(env.reply_queue) == 1
    result = collect(env)
    assert [r.state for r in result.recorded] == ["accepted"]
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_killed_between_write_and_accept_records_nothing_twice(
    env: Env, bus: TransportPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(bus, env.reply_queue, apprec_body(env, env.part("KPR_IPL"), apprec_id="once"))
    serial = env.lock().serial
    script = (
        "import sys; from pathlib import Path; "
        "from iplosctl.manifest import load_manifest; "
        "from iplosctl.receipts import collect_receipts; "
        "collect_receipts(load_manifest(Path(sys.argv[1])))"
    )
    monkeypatch.setenv(receipts.CRASH_AT_ENV, "receipt-recorded")
    done = subprocess.run(
        [sys.executable, "-c", script, str(env.manifest.path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    monkeypatch.delenv(receipts.CRASH_AT_ENV)
    assert env.part("KPR_IPL").state == "accepted"
    assert env.lock().serial == serial + 1
    recorded = env.lock_path.read_bytes()
    result = collect(env)  # the broker delivers it again: a duplicate
    assert (result.recorded, result.duplicates) == ([], 1)
    assert env.lock_path.read_bytes() == recorded
    assert on_queue(env.reply_queue) == 0


@pytest.mark.broker
def test_wait_without_receipts_returns_with_parts_outstanding(env: Env) -> None:
    lines: list[str] = []
    result = collect(env, wait_seconds=1.5, poll_seconds=0.5, progress=lines.append)
    assert result.outstanding == 2
    # how many progress lines depends on the broker's speed; the fake-clock test counts them
    assert all(line.startswith("demo-2023: waiting for 2 receipt(s)") for line in lines)
    assert "still waiting for 2 receipt(s)" in receipts.summary_line(result)


@pytest.mark.broker
def test_wait_returns_once_every_part_is_answered(env: Env, bus: TransportPlugin) -> None:
    publish(bus, env.reply_queue, apprec_body(env, env.part("KPR_IPL")))
    publish(bus, env.error_queue, b"", error_properties(env.part("KPR_IDE")), subject="KPR_IDE")
    result = collect(env, wait_seconds=300, poll_seconds=0.2)
    assert result.outstanding == 0
    assert {p.state for p in env.lock().attempts[0].parts} == {"accepted", "transport-error"}


@pytest.mark.broker
def test_errors_never_show_the_broker_password(
    tmp_path: Path, pki: PkiFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "Wr0ng-Pa55word-for-the-test"
    made = make_env(tmp_path, pki, monkeypatch, password=wrong)
    with pytest.raises(TransportError) as info:
        collect(made)
    assert wrong not in str(info.value) and broker.PASSWORD not in str(info.value)
    assert PERSON_ID not in str(info.value)


def test_damaged_quarantine_files_are_skipped_with_a_warning(
    cli, offline: tuple[Env, FakeBus], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: one malformed metadata file made every receipts and status run exit 3."""
    env, bus = offline
    bus.put(env.reply_queue, b"garbage")  # one good quarantine entry
    collect(env)
    folder = receipts.quarantine_dir(env.manifest)
    other = folder.parent / "another-submission"  # adopted from: every folder is read
    other.mkdir()
    damaged = {
        folder / "20240101T000000Z-a.json": "{not json",
        folder / "20240101T000000Z-b.json": json.dumps({"amqp": ["x"]}),
        other / "20240101T000000Z-c.json": json.dumps(
            {"kind": "unmatched", "queue": env.reply_queue, "originalMsgId": 7}
        ),
        other / "20240101T000000Z-d.json": json.dumps(["a list"]),
    }
    for path, text in damaged.items():
        path.write_text(text, encoding="utf-8")
    bus.put(env.reply_queue, apprec_body(env, env.part("KPR_IPL")))
    with caplog.at_level("WARNING"):
        result = collect(env)
        status = cli("status", "--format", "json", env.manifest.path)
    assert [r.type for r in result.recorded] == ["KPR_IPL"]  # the run went on
    assert status.code == 0, status.all
    assert len(json.loads(status.out)["submissions"][0]["quarantined"]) == 1
    assert len(env.quarantine()) == 1
    warned = [r.getMessage() for r in caplog.records if "damaged quarantine file" in r.getMessage()]
    for path in damaged:
        assert sum(str(path) in w for w in warned) == 1, warned  # once per file and process
    assert any("'amqp' is not an object" in w for w in warned)
    assert any("'originalMsgId' is not a string" in w for w in warned)


def test_an_id_shaped_message_id_names_no_file_and_prints_scrubbed(
    offline: tuple[Env, FakeBus],
) -> None:
    """The AMQP message id and OriginalMsgId of a message are text from outside too."""
    env, bus = offline
    dotted = f"{PERSON_ID[:6]}.{PERSON_ID[6:]}"
    bus.queues[env.reply_queue].append(
        IncomingMessage(env.reply_queue, dotted, dotted, "APPREC", b"garbage", {})
    )
    bus.put(
        env.error_queue,
        b"",
        {"originalMessageId": PERSON_ID, "errorCondition": "transport:internal-error"},
    )
    result = collect(env)
    assert len(result.quarantined) == 2
    printed = "\n".join([receipts.summary_line(result), *receipts.detail_lines(result)])
    names = " ".join(p.name for p in receipts.quarantine_dir(env.manifest).iterdir())
    for text in (printed, names):
        assert PERSON_ID not in text and dotted not in text
    reasons = " ".join(q.reason for q in env.quarantine())
    assert PERSON_ID not in reasons and "[id]" in reasons
