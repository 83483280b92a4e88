"""The pre-flight engine: rules see the export once, streamed, and report findings.

A rule never holds a person id or a name in what it reports: a finding is a
rule id, a severity, a one-line message, a count and the affected records'
indices (and file lines where known). Severity comes from the rule, then the
manifest's `spec.rules` override.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from iplosctl.compiled import mypyc_attr
from iplosctl.manifest.model import Manifest
from iplosctl.profiles import Environment, Profile
from iplosctl.records import ExportHeader, Recipient, record_number

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
#: how many record references a finding keeps (the count is always exact)
MAX_REFS = 20


@dataclass(frozen=True, order=True)
class RecordRef:
    """A record by position in the export (0-based) and line in the file; shown as its
    1-based record number (`record_number`), like the line."""

    index: int
    line: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordRef:
        """Back from `Finding.as_dict` (1-based `record`; `index` in plan caches written
        before records were numbered from 1)."""
        index = int(data["record"]) - 1 if "record" in data else int(data["index"])
        return cls(index, data.get("line"))

    def __str__(self) -> str:
        return f"#{record_number(self.index)}" + (f" (line {self.line})" if self.line else "")


@dataclass(frozen=True)
class Hit:
    """One occurrence a rule noticed; `key` groups hits into one finding."""

    message: str
    record: RecordRef | None = None
    severity: Severity | None = None  # overrides the rule's default for this hit


@dataclass(frozen=True)
class Finding:
    """What the plan shows: hits of one rule with one message, counted."""

    rule: str
    severity: Severity
    message: str
    count: int
    records: tuple[RecordRef, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            # `record` is 1-based like `line`, the number the text and markdown show
            "records": [{"record": record_number(r.index), "line": r.line} for r in self.records],
        }


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may consult besides the records themselves."""

    manifest: Manifest
    profile: Profile
    environment: Environment
    header: ExportHeader
    #: summary of the last accepted submission in the lockfile, if any
    previous_summary: Mapping[str, object] | None = None
    today: dt.date = field(default_factory=dt.date.today)
    late: bool = False


class Rule(Protocol):
    """A pre-flight rule. One instance per run, so it may keep counters."""

    id: str
    default_severity: Severity
    #: where the rule comes from (the letter, a Hdir page); shown by `iplosctl rules`
    source: str

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        """Hits about the export as a whole, before any record."""
        ...

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        """Hits about one (included) record."""
        ...

    def finish(self, ctx: RuleContext) -> Iterable[Hit]:
        """Hits that need every record (totals, comparisons with last year)."""
        ...


@mypyc_attr(native_class=False)
class BaseRule:
    """Defaults for the three hooks, so a rule implements only what it needs.

    An ordinary Python class even when this module is compiled: third-party rule
    packs subclass it, and a subclass sets `id` and friends as class attributes.
    """

    id = ""
    default_severity: Severity = "error"
    source = ""
    #: False for a rule whose errors would make the payload wrong (a record counted
    #: twice): `spec.rules` cannot turn it down, so such a plan is always blocked
    overridable = True

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        return ()

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        return ()

    def finish(self, ctx: RuleContext) -> Iterable[Hit]:
        return ()


@mypyc_attr(native_class=False)  # so a test can prove, with vars(), that it holds no id
class KeyedDigests:
    """Remembers values seen in one run by a keyed 64-bit digest, never the value itself.

    For the rules that must see every record to find a repeat (a LocalId used
    twice, one person under two LocalIds). Memory is one dict entry of two
    ints per record and rule: measured 25 MB for both rules together at
    100,000 recipients (about 125 bytes per record and rule), so linear but
    small beside the 300 MB budget. No id is held, so nothing personal sits in
    memory for the whole run or could reach a crash log; the key is random per
    run, so a digest cannot be looked up in a table of known numbers. Two
    different values share a digest with a chance of about n²/2⁶⁵ (3·10⁻⁸ for
    a million recipients); the finding would then name two records to look at.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(16)
        self._seen: dict[int, int] = {}

    def digest(self, value: str) -> int:
        raw = hashlib.blake2b(value.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(raw, "big")

    def remember(self, value: str, payload: int) -> int | None:
        """The payload stored for `value` before; None the first time (then `payload` is kept)."""
        digest = self.digest(value)
        known = self._seen.get(digest)
        if known is None:
            self._seen[digest] = payload
        return known

    def __len__(self) -> int:
        return len(self._seen)


def pack_ref(ref: RecordRef) -> int:
    """A record reference as one int (index and line below 2³² each), for `KeyedDigests`."""
    return (ref.line or 0) << 32 | ref.index


def unpack_ref(packed: int) -> RecordRef:
    """The reference `pack_ref` packed (ignores any bits above 64)."""
    line = (packed >> 32) & 0xFFFFFFFF
    return RecordRef(packed & 0xFFFFFFFF, line or None)


def overridable(rule: Rule) -> bool:
    """Whether `spec.rules` may change the rule's severity (rules default to yes)."""
    return bool(getattr(rule, "overridable", True))


class FindingCollector:
    """Groups hits into findings per (rule, message, severity), in first-seen order."""

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self._overrides = overrides
        self._counts: dict[tuple[str, str, str], int] = {}
        self._refs: dict[tuple[str, str, str], list[RecordRef]] = {}

    def add(self, rule: Rule, hits: Iterable[Hit]) -> None:
        for hit in hits:
            self.add_hit(rule, hit)

    def add_hit(self, rule: Rule, hit: Hit) -> None:
        override = self._overrides.get(rule.id) if overridable(rule) else None
        if override == "off":
            return
        severity = override or hit.severity or rule.default_severity
        key = (rule.id, hit.message, severity)
        self._counts[key] = self._counts.get(key, 0) + 1
        refs = self._refs.setdefault(key, [])
        if hit.record is not None and len(refs) < MAX_REFS:
            refs.append(hit.record)

    def findings(self) -> list[Finding]:
        order = {s: i for i, s in enumerate(SEVERITIES)}
        out = [
            Finding(rule, severity, message, count, tuple(self._refs[(rule, message, severity)]))  # type: ignore[arg-type]
            for (rule, message, severity), count in self._counts.items()
        ]
        return sorted(out, key=lambda f: (order[f.severity], f.rule, f.message))


class RuleRun:
    """One streamed pass of every rule over one export.

    The plan calls `record()` for each recipient as the source yields it and
    `finish()` at the end, so rules never need the export in memory. A rule
    with an `excludes` method (the test-person rule) decides first; excluded
    records are counted by that rule and seen by no other.
    """

    def __init__(self, rules: Sequence[Rule], ctx: RuleContext) -> None:
        self.ctx = ctx
        self._rules = list(rules)
        self._excluders = [r for r in self._rules if hasattr(r, "excludes")]
        # Rules that inherit BaseRule's empty check_record are not called per record.
        self._record_rules = [
            r
            for r in self._rules
            if getattr(type(r), "check_record", None) is not BaseRule.check_record
        ]
        self._collector = FindingCollector(ctx.manifest.rule_severities)
        for rule in self._rules:
            if not overridable(rule) and rule.id in ctx.manifest.rule_severities:
                self._collector.add_hit(
                    rule,
                    Hit(
                        f"spec.rules.{rule.id} is ignored: this rule guards against records "
                        "being counted twice, so its errors always block; remove the override",
                        severity="warning",
                    ),
                )
            self._collector.add(rule, rule.check_header(ctx))

    def record(self, record: Recipient) -> bool:
        """Check one record; False when it is excluded from the payload."""
        for rule in self._excluders:
            hit = rule.excludes(self.ctx, record)
            if hit is not None:
                self._collector.add(rule, (hit,))
                return False
        # Hot path: one call per rule and record, the collector only when a rule hits.
        ctx, add_hit = self.ctx, self._collector.add_hit
        for rule in self._record_rules:
            for hit in rule.check_record(ctx, record):
                add_hit(rule, hit)
        return True

    def finish(self) -> list[Finding]:
        for rule in self._rules:
            self._collector.add(rule, rule.finish(self.ctx))
        return self._collector.findings()
