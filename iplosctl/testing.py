"""The contract-test kit: what a source, transport or rule pack runs against itself.

iplosctl/plugins.py and iplosctl/rules/engine.py give each plugin kind a
Protocol, but a Protocol only checks names. The promises that keep a
submission safe are behaviour: a source streams and never puts a person into
an error; a transport's `send` returns only once the broker has the message,
and a delivery it hands out stays on the queue until it is accepted; a rule
is pure, has a stable id and a source, and says nothing personal. Each
`check_*` function drives a real plugin through those promises and raises
`ContractViolation` (an AssertionError, so pytest shows it as a failure)
with one sentence naming the plugin, the promise and what happened instead.

The first-party plugins run this kit in tests/test_plugin_contracts.py; a
third party calls the same functions from its own tests (README, "Writing a
plugin"). The kit needs no pytest, and it never skips a check silently: what
it cannot check without help (a peer on the transport's endpoint, a large
export for the streaming check) is a required argument.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import tracemalloc
import typing
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iplosctl.errors import IplosctlError, SourceError, TransportError
from iplosctl.plugins import (
    Export,
    FieldCoverage,
    IncomingMessage,
    OutgoingMessage,
    SourceSpec,
    TransportSettings,
)
from iplosctl.records import ExportHeader, Recipient
from iplosctl.rules.engine import Hit, RecordRef, Rule, RuleContext, RuleRun, Severity

__all__ = [
    "ContractViolation",
    "TransportEndpoint",
    "check_rule_pack",
    "check_source",
    "check_source_rejects",
    "check_source_streams",
    "check_transport",
    "rule_context",
    "sample_message",
    "sample_recipients",
]

SEVERITIES: frozenset[str] = frozenset(typing.get_args(Severity))
#: a rule id as manifests write it in `spec.rules`: lower case words joined by hyphens
RULE_ID = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


class ContractViolation(AssertionError):
    """A plugin broke a promise of its kind's contract; the message says which."""


def _fail(plugin: str, message: str) -> ContractViolation:
    return ContractViolation(f"{plugin}: {message}")


def _one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


def _leaks(text: str, secrets: Iterable[str]) -> list[str]:
    return sorted({s for s in secrets if s and s in text})


def _error_lines(exc: BaseException) -> list[str]:
    """What the CLI prints for `exc` (IplosctlError.lines), else str(exc)."""
    if isinstance(exc, IplosctlError):
        return exc.lines()
    return [str(exc)]


def _check_user_error(
    plugin: str, what: str, exc: BaseException, *, secrets: Iterable[str], names: Sequence[str]
) -> None:
    """One line per problem, naming the input, carrying no personal data or secret."""
    lines = _error_lines(exc)
    text = "\n".join(lines)
    if not lines or not all(line.strip() for line in lines):
        raise _fail(plugin, f"{what}: the error has an empty message")
    for line in lines:
        if not _one_line(line):
            raise _fail(plugin, f"{what}: an error line spans several lines: {line!r}")
    leaked = _leaks(text, secrets)
    if leaked:
        raise _fail(
            plugin,
            f"{what}: the error message shows {len(leaked)} value(s) it must never show "
            "(a person id, a name or a password); refer to records by index",
        )
    if names and not any(name in text for name in names):
        raise _fail(plugin, f"{what}: the error does not name {' or '.join(names)}: {text!r}")


# --- sources ------------------------------------------------------------------------


def _read(plugin: str, source: Any, spec: SourceSpec) -> Export:
    export = source.read(spec)
    if not isinstance(export, Export):
        raise _fail(plugin, f"read() returned {type(export).__name__}, not iplosctl.plugins.Export")
    if not isinstance(export.header, ExportHeader):
        raise _fail(
            plugin,
            f"Export.header is {type(export.header).__name__}, not iplosctl.records.ExportHeader",
        )
    recipients = export.recipients
    if isinstance(recipients, (list, tuple)) or iter(recipients) is not recipients:
        raise _fail(
            plugin,
            f"Export.recipients is a {type(recipients).__name__}: it must be a one-shot "
            "iterator (a generator) that reads the export as it is consumed, not a collection",
        )
    return export


def _person_values(records: Iterable[Recipient]) -> set[str]:
    out: set[str] = set()
    for r in records:
        out.update(v for v in (r.person_id, r.name, r.local_id) if v)
    return out


def _check_coverage(plugin: str, coverage: FieldCoverage, count: int) -> None:
    if not isinstance(coverage, FieldCoverage):
        raise _fail(plugin, f"Export.coverage is {type(coverage).__name__}, not FieldCoverage")
    for key, where in coverage.mapped.items():
        if "." not in key or not isinstance(where, str):
            raise _fail(
                plugin,
                f"coverage.mapped[{key!r}] must be '<item>.<field>' → an XPath or column name",
            )
    for key, present in coverage.present.items():
        item = key.split(".", 1)[0]
        if key not in coverage.mapped:
            raise _fail(plugin, f"coverage.present counts {key!r}, which coverage.mapped lacks")
        if present > coverage.items.get(item, 0):
            raise _fail(
                plugin,
                f"coverage says {present} {item}s had {key!r} but only "
                f"{coverage.items.get(item, 0)} {item}s were read",
            )
    if "recipient" in coverage.items and coverage.items["recipient"] != count:
        raise _fail(
            plugin,
            f"coverage.items['recipient'] is {coverage.items['recipient']} after {count} "
            "recipients were read",
        )
    if len(set(coverage.unread)) != len(coverage.unread):
        raise _fail(plugin, "coverage.unread names a column or element more than once")


def check_source(
    source: Any,
    spec: SourceSpec,
    *,
    expected_recipients: int | None = None,
    missing_file: Path | None = None,
) -> list[Recipient]:
    """Read `spec` (a valid sample export) the way `plan` does and check every promise.

    - `name` is a non-empty string; `read` returns an `Export` whose header is an
      `ExportHeader` and whose `recipients` is a one-shot iterator of `Recipient`s
      with indices 0, 1, 2… in export order (`line`, when set, a positive int);
    - `coverage`, when set, agrees with what was read;
    - a second read gives equal records (apply re-reads and compares digests);
    - `profile_files(spec)` and `inputs(spec)`, when present, return paths;
    - a missing export (`missing_file`, default a name beside `spec.path`) is a
      `SourceError` of one line per problem that names the file, raised by `read`
      or the first record, with no personal data of the sample in it.

    Returns the records, for checks of the plugin's own.
    """
    name = getattr(source, "name", None)
    plugin = f"source {name!r}"
    if not isinstance(name, str) or not name:
        raise _fail(plugin, "the plugin has no `name` (the manifest's spec.source.plugin)")
    export = _read(plugin, source, spec)
    records: list[Recipient] = []
    for position, record in enumerate(export.recipients):
        if not isinstance(record, Recipient):
            raise _fail(
                plugin, f"record {position} is {type(record).__name__}, not iplosctl.Recipient"
            )
        if record.index != position:
            raise _fail(
                plugin,
                f"record {position} has index {record.index}: indices are 0-based positions "
                "in the export, in order",
            )
        if record.line is not None and (not isinstance(record.line, int) or record.line < 1):
            raise _fail(plugin, f"record {position} has line {record.line!r}: 1-based or None")
        records.append(record)
    if expected_recipients is not None and len(records) != expected_recipients:
        raise _fail(
            plugin,
            f"read {len(records)} recipients from {spec.path}, expected {expected_recipients}",
        )
    if not records:
        raise _fail(plugin, f"the sample {spec.path} gave no recipients: use a non-empty sample")
    if export.coverage is not None:
        _check_coverage(plugin, export.coverage, len(records))
    again = _read(plugin, source, spec)
    if again.header != export.header or list(again.recipients) != records:
        raise _fail(plugin, "a second read of the same export gave other records")
    for hook in ("profile_files", "inputs"):
        method = getattr(source, hook, None)
        if callable(method):
            paths = method(spec)
            if paths is None or not all(isinstance(p, Path) for p in paths):
                raise _fail(plugin, f"{hook}(spec) must return a sequence of pathlib.Path")
    missing = missing_file or spec.path.with_name(
        f"missing-{uuid.uuid4().hex[:8]}{spec.path.suffix}"
    )
    _expect_source_error(
        plugin,
        source,
        dataclasses.replace(spec, path=missing),
        "a missing export",
        secrets=_person_values(records),
        names=(missing.name,),
    )
    return records


def _expect_source_error(
    plugin: str,
    source: Any,
    spec: SourceSpec,
    what: str,
    *,
    secrets: Iterable[str],
    names: Sequence[str],
) -> SourceError:
    try:
        export = source.read(spec)
        for _ in export.recipients:
            pass
    except SourceError as exc:
        _check_user_error(plugin, what, exc, secrets=secrets, names=names)
        return exc
    except Exception as exc:
        raise _fail(
            plugin,
            f"{what} raised {type(exc).__name__}, not iplosctl.errors.SourceError (the user "
            "would see a crash log instead of a one-line error)",
        ) from exc
    raise _fail(plugin, f"{what} was read without a SourceError")


def check_source_rejects(
    source: Any, spec: SourceSpec, *, planted: Iterable[str] = ()
) -> SourceError:
    """A bad export (`spec`) is a SourceError, raised by `read` or while streaming.

    The error names the file, has one line per problem and shows none of
    `planted` (person ids or names the test put into the bad export). Returns
    the error so the plugin's own test can check its wording.
    """
    plugin = f"source {getattr(source, 'name', type(source).__name__)!r}"
    return _expect_source_error(
        plugin,
        source,
        spec,
        f"the bad export {spec.path.name}",
        secrets=planted,
        names=(spec.path.name,),
    )


def check_source_streams(source: Any, spec: SourceSpec, *, factor: float = 4.0) -> None:
    """`read` plus the first record must use `factor` times less memory than reading all.

    `spec` is a sample large enough that holding every record shows (a few
    thousand recipients): a source that builds a list in `read`, or parses the
    whole file before yielding, fails.
    """
    plugin = f"source {getattr(source, 'name', type(source).__name__)!r}"
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        export = _read(plugin, source, spec)
        first = next(export.recipients, None)
        _, first_peak = tracemalloc.get_traced_memory()
        if first is None:
            raise _fail(plugin, f"the streaming sample {spec.path} has no recipients")
        rest = list(export.recipients)
        _, all_peak = tracemalloc.get_traced_memory()
    finally:
        if not already:
            tracemalloc.stop()
    if len(rest) < 999:
        raise _fail(plugin, f"the streaming sample has {len(rest) + 1} recipients: use ≥ 1000")
    if first_peak * factor > all_peak:
        raise _fail(
            plugin,
            f"read() and the first record peaked at {first_peak} bytes, reading all "
            f"{len(rest) + 1} at {all_peak}: recipients must stream, not be built up front",
        )


# --- transports ---------------------------------------------------------------------


@dataclass(frozen=True)
class TransportEndpoint:
    """A real endpoint the kit may use, and the peer's side of it.

    `queue` must be empty at the start and is the kit's alone. `put` places a
    message on `queue` as the register would (so `receive(queue)` finds it);
    `take` returns, and removes, what `send(to_queue=queue)` delivered, read
    the way the register reads it. `broken` are settings under which using the
    transport must fail (a wrong password, a missing folder).
    """

    settings: TransportSettings
    queue: str
    put: Callable[[OutgoingMessage], None]
    take: Callable[[], list[IncomingMessage]]
    broken: Sequence[TransportSettings] = ()
    receive_timeout: float = 1.0
    #: secrets that must never appear in an error or repr (besides each settings' password)
    secrets: Sequence[str] = field(default=(), repr=False)


def sample_message(queue: str, *, body: bytes | None = None) -> OutgoingMessage:
    """A message shaped like apply's: NHN properties as strings, a binary body."""
    return OutgoingMessage(
        message_id=str(uuid.uuid4()),
        correlation_id=str(uuid.uuid4()),
        subject="KPR_IPL",
        body=bytes(range(256)) * 8 if body is None else body,
        to_queue=queue,
        reply_to="8094867_async",
        application_properties={
            "fromHerId": "8094867",
            "toHerId": "8117845",
            "applicationTimeStamp": "2024-03-01T10:11:12Z",
        },
    )


def _same(plugin: str, what: str, sent: OutgoingMessage, got: IncomingMessage) -> None:
    if not isinstance(got, IncomingMessage):
        raise _fail(plugin, f"{what}: got {type(got).__name__}, not IncomingMessage")
    if type(got.body) is not bytes:
        raise _fail(plugin, f"{what}: the body is {type(got.body).__name__}, not bytes")
    differs = [
        name
        for name, a, b in (
            ("message_id", sent.message_id, got.message_id),
            ("correlation_id", sent.correlation_id, got.correlation_id),
            ("subject", sent.subject, got.subject),
            ("body", sent.body, got.body),
        )
        if a != b
    ]
    if got.reply_to is not None and got.reply_to != sent.reply_to:
        differs.append("reply_to")
    props = dict(got.application_properties)
    for key, value in sent.application_properties.items():
        if props.get(key) != value:
            differs.append(f"application property {key}")
    if any(not isinstance(v, str) for v in props.values()):
        differs.append("application properties must be strings")
    if differs:
        raise _fail(plugin, f"{what}: {', '.join(differs)} did not survive the trip")


def _receive(
    plugin: str, transport: Any, endpoint: TransportEndpoint, settle: Callable[[Any], None]
) -> list[IncomingMessage]:
    out = []
    for delivery in transport.receive(endpoint.queue, timeout=endpoint.receive_timeout):
        message = getattr(delivery, "message", None)
        if not isinstance(message, IncomingMessage):
            raise _fail(plugin, "receive() yielded a delivery without an IncomingMessage")
        if message.queue != endpoint.queue:
            raise _fail(
                plugin,
                f"a delivery from {endpoint.queue!r} says it came from {message.queue!r}",
            )
        settle(delivery)
        out.append(message)
    return out


def _ids(messages: Iterable[IncomingMessage]) -> list[str | None]:
    return sorted((m.message_id for m in messages), key=str)


def check_transport(
    factory: Callable[[TransportSettings], Any], endpoint: TransportEndpoint
) -> None:
    """Drive a transport through send, receive, accept, release and close on a real endpoint.

    - `name` is set; `repr` of the transport never shows the password;
    - `close` may be called twice, also on a transport never used;
    - `send` (after `prepare`, when the plugin has it) delivers one message whose ids,
      subject, body bytes, reply-to and application properties (strings) arrive intact;
    - `receive` yields deliveries of `IncomingMessage`s from that queue; an accepted
      one is gone, a released one and one never settled before `close` come back on
      the next run (nothing the lockfile has not recorded is lost);
    - every broken setting fails with a `TransportError` of one line that shows no
      password, and `close` still works after it.
    """
    transport = factory(endpoint.settings)
    name = getattr(transport, "name", None)
    plugin = f"transport {name!r}"
    if not isinstance(name, str) or not name:
        raise _fail(plugin, "the plugin has no `name` (the manifest's endpoint.transport)")
    passwords = [s.password for s in (endpoint.settings, *endpoint.broken) if s.password]
    secrets = [*passwords, *endpoint.secrets]
    if _leaks(repr(transport), secrets):
        raise _fail(plugin, "repr() of the transport shows a password")
    _close_twice(plugin, transport, "on a transport never used")

    # send
    sent = sample_message(endpoint.queue)
    transport = factory(endpoint.settings)
    try:
        prepare = getattr(transport, "prepare", None)
        if callable(prepare):
            prepare(endpoint.queue)
        transport.send(sent)
    finally:
        _close_twice(plugin, transport, "after send")
    arrived = endpoint.take()
    if len(arrived) != 1:
        raise _fail(plugin, f"one send() put {len(arrived)} messages on {endpoint.queue!r}")
    _same(plugin, "send", sent, arrived[0])

    # receive, accept, release, leave unsettled
    accepted, released, unsettled = (sample_message(endpoint.queue) for _ in range(3))
    for message in (accepted, released, unsettled):
        endpoint.put(message)
    by_id = {m.message_id: m for m in (accepted, released, unsettled)}

    def settle_first(delivery: Any) -> None:
        if delivery.message.message_id == accepted.message_id:
            delivery.accept()
        elif delivery.message.message_id == released.message_id:
            delivery.release()

    transport = factory(endpoint.settings)
    try:
        got = _receive(plugin, transport, endpoint, settle_first)
    finally:
        transport.close()
    if _ids(got) != _ids(by_id.values()):
        raise _fail(
            plugin,
            f"receive() yielded {len(got)} of the 3 messages put on {endpoint.queue!r}"
            + (" (some twice)" if len(set(_ids(got))) < len(got) else ""),
        )
    for message in got:
        _same(plugin, "receive", by_id[str(message.message_id)], message)

    transport = factory(endpoint.settings)
    try:
        again = _receive(plugin, transport, endpoint, lambda d: d.accept())
    finally:
        transport.close()
    expected = _ids([_as_incoming(released), _as_incoming(unsettled)])
    if _ids(again) != expected:
        lost = [
            label
            for label, message in (("released", released), ("never settled", unsettled))
            if message.message_id not in {m.message_id for m in again}
        ]
        back = accepted.message_id in {m.message_id for m in again}
        raise _fail(
            plugin,
            "after accept/release/close, the next receive() "
            + ("lost the " + " and the ".join(lost) + " delivery" if lost else "")
            + ("; " if lost and back else "")
            + ("returned the accepted delivery again" if back else ""),
        )
    transport = factory(endpoint.settings)
    try:
        left = _receive(plugin, transport, endpoint, lambda d: d.release())
    finally:
        transport.close()
    if left:
        raise _fail(plugin, f"{len(left)} accepted deliveries came back on {endpoint.queue!r}")

    # failures
    for number, settings in enumerate(endpoint.broken, 1):
        _check_broken(plugin, factory, settings, endpoint, f"broken setting {number}", secrets)


def _as_incoming(message: OutgoingMessage) -> IncomingMessage:
    return IncomingMessage(
        queue=message.to_queue,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        subject=message.subject,
        body=message.body,
        application_properties=message.application_properties,
    )


def _check_broken(
    plugin: str,
    factory: Callable[[TransportSettings], Any],
    settings: TransportSettings,
    endpoint: TransportEndpoint,
    what: str,
    secrets: Sequence[str],
) -> None:
    try:
        transport = factory(settings)
    except TransportError as exc:  # refusing the settings at once is allowed
        _check_user_error(plugin, what, exc, secrets=secrets, names=())
        return
    except Exception as exc:
        raise _fail(
            plugin,
            f"{what}: creating the transport raised {type(exc).__name__}, not TransportError",
        ) from exc
    try:
        prepare = getattr(transport, "prepare", None)
        if callable(prepare):
            prepare(endpoint.queue)
        transport.send(sample_message(endpoint.queue))
    except TransportError as exc:
        _check_user_error(plugin, what, exc, secrets=secrets, names=())
    except Exception as exc:
        raise _fail(
            plugin,
            f"{what}: sending raised {type(exc).__name__}, not a TransportError subclass",
        ) from exc
    else:
        raise _fail(plugin, f"{what}: sending succeeded where it must fail")
    finally:
        _close_twice(plugin, transport, f"after {what} failed")


def _close_twice(plugin: str, transport: Any, when: str) -> None:
    """close() must be idempotent: apply and receipts close in `finally` and on exit."""
    for attempt in ("", " a second time"):
        try:
            transport.close()
        except Exception as exc:
            raise _fail(
                plugin, f"close(){attempt} {when} raised {type(exc).__name__}: {exc}"
            ) from exc


# --- rule packs ---------------------------------------------------------------------


def sample_recipients(count: int = 40, *, seed: int = 15, year: int = 2023) -> list[Recipient]:
    """Synthetic recipients (Test-Norge ids only, a few test persons) for rule checks."""
    from iplosctl.sandbox.generate import synthetic_recipients

    return list(synthetic_recipients(recipients=count, seed=seed, year=year, test_persons=2))


def rule_context(manifest: Path, *, today: dt.date | None = None) -> RuleContext:
    """The context `plan` would give rules for `manifest` (its profile and environment)."""
    from iplosctl.manifest import load_manifest
    from iplosctl.profiles import profile_for

    m = load_manifest(manifest)
    profile = profile_for(m)
    header = ExportHeader(m.municipality.number, m.reporting_year, m.epj.system, m.epj.version)
    return RuleContext(
        manifest=m,
        profile=profile,
        environment=profile.environments[m.environment],
        header=header,
        today=today or dt.date(m.reporting_year + 1, 1, 5),
    )


def _instantiate(plugin: str, pack: Any) -> list[Rule]:
    rules = pack() if callable(pack) else pack
    try:
        return list(rules)
    except TypeError:
        raise _fail(plugin, f"the pack gave {type(rules).__name__}, not a list of rules") from None


def _hits(plugin: str, rule: Rule, hook: str, result: Any, indices: set[int]) -> list[Hit]:
    where = f"rule {rule.id!r}.{hook}"
    try:
        hits = list(result or ())
    except TypeError:
        raise _fail(plugin, f"{where} returned {type(result).__name__}, not hits") from None
    for hit in hits:
        if not isinstance(hit, Hit):
            raise _fail(plugin, f"{where} yielded {type(hit).__name__}, not rules.Hit")
        if not isinstance(hit.message, str) or not hit.message.strip():
            raise _fail(plugin, f"{where} yielded a hit without a message")
        if not _one_line(hit.message):
            raise _fail(plugin, f"{where}: a hit message spans several lines: {hit.message!r}")
        if hit.severity is not None and hit.severity not in SEVERITIES:
            raise _fail(
                plugin, f"{where}: severity {hit.severity!r} is not one of {sorted(SEVERITIES)}"
            )
        if hit.record is not None and (
            not isinstance(hit.record, RecordRef) or hit.record.index not in indices
        ):
            raise _fail(
                plugin, f"{where}: a hit points at {hit.record!r}, not a record it was given"
            )
    return hits


def _run(plugin: str, rules: list[Rule], ctx: RuleContext, records: list[Recipient]) -> list[Any]:
    indices = {r.index for r in records}
    out: list[Any] = []
    for rule in rules:
        step = "check_header"
        try:
            out += _hits(plugin, rule, "check_header", rule.check_header(ctx), indices)
            for record in records:
                step = f"check_record of record {record.index}"
                out += _hits(plugin, rule, "check_record", rule.check_record(ctx, record), indices)
            step = "finish"
            out += _hits(plugin, rule, "finish", rule.finish(ctx), indices)
        except ContractViolation:
            raise
        except Exception as exc:
            raise _fail(
                plugin,
                f"rule {rule.id!r} raised {type(exc).__name__} "
                f"({'on an empty export' if not records else step}); a rule reports problems "
                "as hits and never raises for odd data",
            ) from exc
    return out


def check_rule_pack(
    pack: Any, ctx: RuleContext, *, records: Sequence[Recipient] | None = None, name: str = ""
) -> list[Rule]:
    """Check a rule pack (what an `iplosctl.rules` entry point names) against its contract.

    - the pack is a callable returning rules (or a list of them); a callable gives
      fresh instances on each call, in the same order;
    - each rule has a stable id (lower-case words and hyphens, unique in the pack),
      a `default_severity` of error/warning/info and a non-empty `source` (the
      letter or page it enforces), and the three hooks;
    - on an empty export every hook runs without raising; on `records` (default:
      `sample_recipients()`) too, and the hits are `Hit`s with one-line messages,
      valid severities and references only to given records;
    - no hit message shows a record's person id, name or local id;
    - two runs on the same input give the same hits (rules are pure per run);
    - the engine (`RuleRun`) accepts the pack.
    """
    plugin = f"rule pack {name or getattr(pack, '__name__', type(pack).__name__)!r}"
    rules = _instantiate(plugin, pack)
    if not rules:
        raise _fail(plugin, "the pack has no rules")
    seen: set[str] = set()
    for rule in rules:
        rule_id = getattr(rule, "id", None)
        if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
            raise _fail(
                plugin,
                f"{type(rule).__name__} has id {rule_id!r}: use lower-case words joined by "
                "hyphens (manifests name it in spec.rules)",
            )
        if rule_id in seen:
            raise _fail(plugin, f"two rules have the id {rule_id!r}")
        seen.add(rule_id)
        if getattr(rule, "default_severity", None) not in SEVERITIES:
            raise _fail(
                plugin,
                f"rule {rule_id!r} has default_severity {getattr(rule, 'default_severity', None)!r}"
                f", not one of {sorted(SEVERITIES)}",
            )
        source = getattr(rule, "source", None)
        if not isinstance(source, str) or not source.strip():
            raise _fail(
                plugin, f"rule {rule_id!r} has no `source` (the letter or page it enforces)"
            )
        for hook in ("check_header", "check_record", "finish"):
            if not callable(getattr(rule, hook, None)):
                raise _fail(
                    plugin, f"rule {rule_id!r} has no {hook}() (subclass rules.engine.BaseRule)"
                )
    if callable(pack):
        second = _instantiate(plugin, pack)
        if [r.id for r in second] != [r.id for r in rules]:
            raise _fail(plugin, "two calls of the pack gave rules of other ids or order")
        if any(a is b for a, b in zip(rules, second, strict=True)):
            raise _fail(
                plugin,
                "two calls of the pack returned the same rule objects: return fresh instances, "
                "a rule may keep counters for one run",
            )

    _run(plugin, _instantiate(plugin, pack), ctx, [])
    sample = list(records) if records is not None else sample_recipients()
    first = _run(plugin, _instantiate(plugin, pack), ctx, sample)
    personal = _person_values(sample)
    for hit in first:
        if _leaks(hit.message, personal):
            raise _fail(
                plugin,
                "a hit message shows a person id, name or local id: "
                f"{_redact(hit.message, personal)!r}",
            )
    if _run(plugin, _instantiate(plugin, pack), ctx, sample) != first:
        raise _fail(
            plugin, "two runs on the same records gave other hits: keep no state between runs"
        )
    run = RuleRun(_instantiate(plugin, pack), ctx)
    for record in sample:
        run.record(record)
    for finding in run.finish():
        if _leaks(finding.message, personal):
            raise _fail(plugin, f"finding {finding.rule!r} shows personal data in its message")
    return rules


def _redact(text: str, values: Iterable[str]) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text
