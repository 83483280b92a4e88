"""The first-party plugins pass the contract-test kit (iplosctl.testing) a third party runs.

xml and csv (sources), directory and amqp (transports; amqp against the real
test broker) and the kpr rule pack run through the same functions a plugin
author calls. The last tests feed the kit plugins that break one promise
each, to prove each check can fail and says which promise was broken.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proton import Message

from iplosctl import plugins
from iplosctl.errors import SourceError, TransportError
from iplosctl.plugins import (
    Export,
    IncomingMessage,
    OutgoingMessage,
    SourceSpec,
    TransportSettings,
)
from iplosctl.rules.engine import BaseRule, Hit, RecordRef
from iplosctl.rules.kpr import rules as kpr_rules
from iplosctl.sandbox.generate import generate_export, synthetic_recipients
from iplosctl.testing import (
    ContractViolation,
    TransportEndpoint,
    check_rule_pack,
    check_source,
    check_source_rejects,
    check_source_streams,
    check_transport,
    rule_context,
    sample_recipients,
)
from iplosctl_source_csv import CsvSource
from iplosctl_source_xml import XmlSource
from iplosctl_transport_amqp import AmqpTransport, receive_address
from iplosctl_transport_directory import DirectoryTransport, message_metadata
from tests import broker
from tests.conftest import DEMO_MANIFEST

REPO = Path(__file__).resolve().parent.parent
DEMO_EXPORT = REPO / "examples" / "exports" / "demo-2023.xml"
PERSON = "05903813050"  # Test-Norge, planted in the bad exports
CSV_OPTIONS: dict[str, Any] = {
    "municipality": "9999",
    "reportingYear": 2023,
    "epjSystem": "DemoEPJ",
    "epjVersion": "4.2.0",
}


# --- sources ------------------------------------------------------------------------


def _csv(path: Path, count: int, seed: int = 3) -> Path:
    lines = ["localId;personId;code;from;to;hoursPerWeek;orgNumber"]
    for r in synthetic_recipients(recipients=count, seed=seed):
        for s in r.services:
            cells = [r.local_id, r.person_id, s.code, s.start, s.end, s.hours_per_week]
            cells.append(s.org_number)
            lines.append(";".join("" if c is None else str(c) for c in cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_xml_source_honours_the_source_contract(tmp_path: Path) -> None:
    records = check_source(XmlSource(), SourceSpec(DEMO_EXPORT))
    assert len(records) > 10


def test_xml_source_streams(tmp_path: Path) -> None:
    path = tmp_path / "large.xml"
    generate_export(path, recipients=3000, seed=7)
    check_source_streams(XmlSource(), SourceSpec(path))


def test_xml_source_rejects_a_bad_export_without_showing_the_person(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    good = DEMO_EXPORT.read_text(encoding="utf-8")
    start = good.index("<PersonId>") + len("<PersonId>")
    person = good[start : good.index("</PersonId>", start)]
    path.write_text(good.replace(person, person[:-1] + "x", 1), encoding="utf-8")
    error = check_source_rejects(XmlSource(), SourceSpec(path), planted=[person[:-1] + "x"])
    assert "bad.xml" in str(error)


def test_csv_source_honours_the_source_contract(tmp_path: Path) -> None:
    path = _csv(tmp_path / "export.csv", 30)
    records = check_source(CsvSource(), SourceSpec(path, None, CSV_OPTIONS))
    assert len(records) == 30


def test_csv_source_streams(tmp_path: Path) -> None:
    path = _csv(tmp_path / "large.csv", 3000)
    check_source_streams(CsvSource(), SourceSpec(path, None, CSV_OPTIONS))


def test_csv_source_rejects_a_bad_export_without_showing_the_person(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"localId;personId;name;code\nr-1;{PERSON}0;Donald Duck;15\n", encoding="utf-8")
    check_source_rejects(
        CsvSource(), SourceSpec(path, None, CSV_OPTIONS), planted=[PERSON + "0", "Donald Duck"]
    )


# --- transports ---------------------------------------------------------------------


def _directory_endpoint(root: Path, queue: str) -> TransportEndpoint:
    """The peer of an outbox folder: whoever carries files to the register and back."""

    def put(message: OutgoingMessage) -> None:
        inbox = root / "inbox" / queue
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / f"{message.message_id}.p7m").write_bytes(message.body)
        meta = json.dumps(message_metadata(message), sort_keys=True)
        (inbox / f"{message.message_id}.json").write_text(meta, encoding="utf-8")

    def take() -> list[IncomingMessage]:
        outbox = root / "outbox" / queue
        out = []
        for meta in sorted(outbox.glob("*.json")) if outbox.is_dir() else []:
            data = json.loads(meta.read_text(encoding="utf-8"))
            body = (outbox / data["body_file"]).read_bytes()
            out.append(
                IncomingMessage(
                    queue=queue,
                    message_id=data["message_id"],
                    correlation_id=data["correlation_id"],
                    subject=data["subject"],
                    body=body,
                    application_properties=data["application_properties"],
                    reply_to=data["reply_to"],
                )
            )
        shutil.rmtree(outbox, ignore_errors=True)
        return out

    return TransportEndpoint(
        settings=TransportSettings(url=str(root)),
        queue=queue,
        put=put,
        take=take,
        broken=[TransportSettings(url=str(root / "does-not-exist"))],
    )


def test_directory_transport_honours_the_transport_contract(tmp_path: Path) -> None:
    check_transport(DirectoryTransport, _directory_endpoint(tmp_path, "8094867_async"))


def test_the_transports_are_the_registered_ones() -> None:
    assert plugins.load("transport", "directory") is DirectoryTransport
    assert plugins.load("transport", "amqp") is AmqpTransport


@pytest.fixture
def broker_queue() -> Iterator[str]:
    name = f"iplosctl-contract-{uuid.uuid4().hex[:12]}"
    broker.declare_queue(name)
    yield name
    broker.delete_queue(name)


def _amqp_endpoint(queue: str) -> TransportEndpoint:
    """The register's side of the real broker, spoken with plain proton."""

    def put(message: OutgoingMessage) -> None:
        conn = broker.connect()
        try:
            conn.create_sender(f"/amq/queue/{queue}").send(
                Message(
                    id=message.message_id,
                    correlation_id=message.correlation_id,
                    subject=message.subject,
                    reply_to=message.reply_to,
                    body=message.body,
                    inferred=True,
                    durable=True,
                    properties=dict(message.application_properties),
                )
            )
        finally:
            conn.close()

    def take() -> list[IncomingMessage]:
        conn = broker.connect()
        out = []
        try:
            receiver = conn.create_receiver(receive_address(queue), credit=10)
            while True:
                try:
                    raw = receiver.receive(timeout=2)
                except Exception:  # proton's Timeout: the queue is empty
                    break
                receiver.accept()
                out.append(
                    IncomingMessage(
                        queue=queue,
                        message_id=str(raw.id),
                        correlation_id=str(raw.correlation_id),
                        subject=raw.subject,
                        body=bytes(raw.body),
                        application_properties=dict(raw.properties or {}),
                        reply_to=raw.reply_to,
                    )
                )
        finally:
            conn.close()
        return out

    good = TransportSettings(
        url=broker.AMQP_URL, username=broker.USER, password=broker.PASSWORD, timeout_seconds=20
    )
    return TransportEndpoint(
        settings=good,
        queue=queue,
        put=put,
        take=take,
        broken=[dataclasses.replace(good, password="Planted-Pa55word-contract")],
        receive_timeout=1.0,
    )


@pytest.mark.broker
def test_amqp_transport_honours_the_transport_contract(broker_queue: str) -> None:
    check_transport(AmqpTransport, _amqp_endpoint(broker_queue))


# --- rule packs ---------------------------------------------------------------------


def test_kpr_rule_pack_honours_the_rule_contract() -> None:
    ctx = rule_context(DEMO_MANIFEST)
    rules = check_rule_pack(kpr_rules, ctx, name="kpr")
    assert "person-id" in {r.id for r in rules}
    assert plugins.load("rules", "kpr") is kpr_rules


def test_kpr_rule_pack_on_records_that_trip_its_rules() -> None:
    """Hits must actually be produced for the privacy check to mean something."""
    ctx = rule_context(DEMO_MANIFEST)
    records = sample_recipients(30)
    broken = [
        dataclasses.replace(records[0], person_id=records[0].person_id[:-1] + "0"),
        dataclasses.replace(records[1], local_id=records[2].local_id),
        *records[2:],
    ]
    rules = kpr_rules()
    hits = [h for r in rules for rec in broken for h in r.check_record(ctx, rec)]
    assert hits, "the sample trips no rule: the privacy check would prove nothing"
    check_rule_pack(kpr_rules, ctx, records=broken, name="kpr")


# --- the kit fails, and says why ----------------------------------------------------


class _ListSource:
    """Builds every record in read(): what the streaming promise forbids."""

    name = "list"

    def read(self, spec: SourceSpec) -> Export:
        export = XmlSource().read(spec)
        return Export(header=export.header, recipients=list(export.recipients))  # type: ignore[arg-type]


class _EagerSource:
    """An iterator, but over records all built up front."""

    name = "eager"

    def read(self, spec: SourceSpec) -> Export:
        export = XmlSource().read(spec)
        return Export(header=export.header, recipients=iter(list(export.recipients)))


class _OneBasedSource:
    name = "one-based"

    def read(self, spec: SourceSpec) -> Export:
        export = XmlSource().read(spec)
        return Export(
            header=export.header,
            recipients=(dataclasses.replace(r, index=r.index + 1) for r in export.recipients),
        )


class _CrashingSource:
    """Lets a missing file escape as FileNotFoundError (a crash log, not a user error)."""

    name = "crashing"

    def read(self, spec: SourceSpec) -> Export:
        spec.path.stat()
        return XmlSource().read(spec)


def test_the_source_kit_catches_each_broken_promise(tmp_path: Path) -> None:
    spec = SourceSpec(DEMO_EXPORT)
    with pytest.raises(ContractViolation, match="one-shot iterator"):
        check_source(_ListSource(), spec)
    with pytest.raises(ContractViolation, match="has index 1: indices are 0-based"):
        check_source(_OneBasedSource(), spec)
    with pytest.raises(ContractViolation, match=r"raised FileNotFoundError, not .*SourceError"):
        check_source(_CrashingSource(), spec)
    large = tmp_path / "large.xml"
    generate_export(large, recipients=3000, seed=7)
    with pytest.raises(ContractViolation, match="must stream"):
        check_source_streams(_EagerSource(), SourceSpec(large))


def test_the_source_kit_catches_personal_data_in_an_error(tmp_path: Path) -> None:
    from iplosctl.errors import Location, Problem

    class Tattler:
        name = "tattler"

        def read(self, spec: SourceSpec) -> Export:
            raise SourceError([Problem(Location(str(spec.path), 3), f"bad person {PERSON}")])

    bad = tmp_path / "bad.xml"
    bad.write_text("x", encoding="utf-8")
    with pytest.raises(ContractViolation, match="must never show") as caught:
        check_source_rejects(Tattler(), SourceSpec(bad), planted=[PERSON])
    assert PERSON not in str(caught.value)
    with pytest.raises(ContractViolation, match="was read without a SourceError"):
        check_source_rejects(XmlSource(), SourceSpec(DEMO_EXPORT))


class _LosingDirectory(DirectoryTransport):
    """release() moves the message away: a released delivery would be lost."""

    def receive(self, queue: str, *, timeout: float) -> Iterator[Any]:
        for delivery in super().receive(queue, timeout=timeout):
            delivery.release = delivery.accept  # type: ignore[method-assign]
            yield delivery


class _LeakyDirectory(DirectoryTransport):
    def prepare(self, to_queue: str) -> None:
        if not self.root.is_dir():
            raise TransportError(f"cannot log in with {self.settings.password}")


class _OSErrorDirectory(DirectoryTransport):
    def prepare(self, to_queue: str) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(self.root)


class _NotIdempotentClose(DirectoryTransport):
    closed = False

    def close(self) -> None:
        if self.closed:
            raise RuntimeError("already closed")
        self.closed = True


class _DroppingDirectory(DirectoryTransport):
    def send(self, message: OutgoingMessage) -> None:
        super().send(dataclasses.replace(message, application_properties={}))


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (_LosingDirectory, "lost the released delivery"),
        (_OSErrorDirectory, "raised FileNotFoundError, not a TransportError"),
        (_NotIdempotentClose, "close\\(\\) .*raised RuntimeError"),
        (_DroppingDirectory, "application property fromHerId.* did not survive"),
    ],
)
def test_the_transport_kit_catches_each_broken_promise(
    tmp_path: Path, factory: Any, expected: str
) -> None:
    with pytest.raises(ContractViolation, match=expected):
        check_transport(factory, _directory_endpoint(tmp_path, "q"))


def test_the_transport_kit_catches_a_password_in_an_error(tmp_path: Path) -> None:
    endpoint = _directory_endpoint(tmp_path, "q")
    endpoint = dataclasses.replace(
        endpoint,
        broken=[TransportSettings(url=str(tmp_path / "nope"), password="Planted-Pa55word-x")],
    )
    with pytest.raises(ContractViolation, match="must never show") as caught:
        check_transport(_LeakyDirectory, endpoint)
    assert "Planted-Pa55word-x" not in str(caught.value)


class _NoSource(BaseRule):
    id = "no-source"


class _BadId(BaseRule):
    id = "Bad_Id"
    source = "here"


class _Raises(BaseRule):
    id = "raises"
    source = "here"

    def finish(self, ctx: Any) -> list[Hit]:
        raise ZeroDivisionError


class _Tells(BaseRule):
    id = "tells"
    source = "here"

    def check_record(self, ctx: Any, record: Any) -> list[Hit]:
        return [Hit(f"person {record.person_id} is odd", RecordRef(record.index))]


class _Counts(BaseRule):
    """Keeps a counter across runs: a list pack shares it."""

    id = "counts"
    source = "here"
    seen = 0

    def finish(self, ctx: Any) -> list[Hit]:
        type(self).seen += 1
        return [Hit(f"run {type(self).seen}")]


@pytest.mark.parametrize(
    ("pack", "expected"),
    [
        (lambda: [_NoSource()], "rule 'no-source' has no `source`"),
        (lambda: [_BadId()], "has id 'Bad_Id'"),
        (lambda: [_Raises()], "rule 'raises' raised ZeroDivisionError .*on an empty export"),
        (lambda: [_Tells()], "shows a person id"),
        ([_Counts()], "two runs on the same records gave other hits"),
    ],
)
def test_the_rule_kit_catches_each_broken_promise(pack: Any, expected: str) -> None:
    ctx = rule_context(DEMO_MANIFEST)
    with pytest.raises(ContractViolation, match=expected) as caught:
        check_rule_pack(pack, ctx)
    assert all(r.person_id not in str(caught.value) for r in sample_recipients())


def test_the_kit_messages_name_the_plugin() -> None:
    ctx = rule_context(DEMO_MANIFEST)
    with pytest.raises(ContractViolation, match=r"^rule pack 'mine': "):
        check_rule_pack(lambda: [_BadId()], ctx, name="mine")


def test_the_readme_plugin_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- plugin-example -->\n```python\n", 1)[1].split("\n```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "fjordvik_rules"}
    exec(compile(block, "README.md (plugin example)", "exec"), namespace)
    monkeypatch.chdir(REPO)
    namespace["test_fjordvik_rules_honour_the_contract"]()
    # the example's rule fires on a record it is about, so the check exercised a hit
    ctx = rule_context(DEMO_MANIFEST)
    record = sample_recipients(1)[0]
    home_care = dataclasses.replace(
        record, services=(dataclasses.replace(record.services[0], code="15", hours_per_week=None),)
    )
    (rule,) = namespace["rules"]()
    assert [h.message for h in rule.check_record(ctx, home_care)] == [
        "home care (15) without hours per week"
    ]
