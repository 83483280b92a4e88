"""Checks for rule packs: stable ids, a source, pure hooks, no personal data in hits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from iplosctl.records import ExportHeader, Recipient
from iplosctl.rules.engine import Hit, RecordRef, Rule, RuleContext, RuleRun
from iplosctl.testing._common import (
    RULE_ID,
    SEVERITIES,
    ContractViolation,
    fail,
    leaks,
    one_line,
    person_values,
)


def sample_recipients(count: int = 40, *, seed: int = 15, year: int = 2023) -> list[Recipient]:
    """Synthetic recipients (Test-Norge ids only, a few test persons) for rule checks."""
    from iplosctl.sandbox.generate import synthetic_recipients

    return list(
        synthetic_recipients(
            recipients=count, seed=seed, year=year, test_persons=min(2, count // 10)
        )
    )


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
        raise fail(plugin, f"the pack gave {type(rules).__name__}, not a list of rules") from None


def _hits(plugin: str, rule: Rule, hook: str, result: Any, indices: set[int]) -> list[Hit]:
    where = f"rule {rule.id!r}.{hook}"
    try:
        hits = list(result or ())
    except TypeError:
        raise fail(plugin, f"{where} returned {type(result).__name__}, not hits") from None
    for hit in hits:
        if not isinstance(hit, Hit):
            raise fail(plugin, f"{where} yielded {type(hit).__name__}, not rules.Hit")
        if not isinstance(hit.message, str) or not hit.message.strip():
            raise fail(plugin, f"{where} yielded a hit without a message")
        if not one_line(hit.message):
            raise fail(plugin, f"{where}: a hit message spans several lines: {hit.message!r}")
        if hit.severity is not None and hit.severity not in SEVERITIES:
            raise fail(
                plugin, f"{where}: severity {hit.severity!r} is not one of {sorted(SEVERITIES)}"
            )
        if hit.record is not None and (
            not isinstance(hit.record, RecordRef) or hit.record.index not in indices
        ):
            raise fail(
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
            raise fail(
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
        raise fail(plugin, "the pack has no rules")
    seen: set[str] = set()
    for rule in rules:
        rule_id = getattr(rule, "id", None)
        if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
            raise fail(
                plugin,
                f"{type(rule).__name__} has id {rule_id!r}: use lower-case words joined by "
                "hyphens (manifests name it in spec.rules)",
            )
        if rule_id in seen:
            raise fail(plugin, f"two rules have the id {rule_id!r}")
        seen.add(rule_id)
        if getattr(rule, "default_severity", None) not in SEVERITIES:
            raise fail(
                plugin,
                f"rule {rule_id!r} has default_severity {getattr(rule, 'default_severity', None)!r}"
                f", not one of {sorted(SEVERITIES)}",
            )
        source = getattr(rule, "source", None)
        if not isinstance(source, str) or not source.strip():
            raise fail(plugin, f"rule {rule_id!r} has no `source` (the letter or page it enforces)")
        for hook in ("check_header", "check_record", "finish"):
            if not callable(getattr(rule, hook, None)):
                raise fail(
                    plugin, f"rule {rule_id!r} has no {hook}() (subclass rules.engine.BaseRule)"
                )
    if callable(pack):
        second = _instantiate(plugin, pack)
        if [r.id for r in second] != [r.id for r in rules]:
            raise fail(plugin, "two calls of the pack gave rules of other ids or order")
        if any(a is b for a, b in zip(rules, second, strict=True)):
            raise fail(
                plugin,
                "two calls of the pack returned the same rule objects: return fresh instances, "
                "a rule may keep counters for one run",
            )

    _run(plugin, _instantiate(plugin, pack), ctx, [])
    sample = list(records) if records is not None else sample_recipients()
    first = _run(plugin, _instantiate(plugin, pack), ctx, sample)
    personal = person_values(sample)
    for hit in first:
        if leaks(hit.message, personal):
            raise fail(
                plugin,
                "a hit message shows a person id, name or local id: "
                f"{_redact(hit.message, personal)!r}",
            )
    if _run(plugin, _instantiate(plugin, pack), ctx, sample) != first:
        raise fail(
            plugin, "two runs on the same records gave other hits: keep no state between runs"
        )
    run = RuleRun(_instantiate(plugin, pack), ctx)
    for record in sample:
        run.record(record)
    for finding in run.finish():
        if leaks(finding.message, personal):
            raise fail(plugin, f"finding {finding.rule!r} shows personal data in its message")
    return rules


def _redact(text: str, values: Iterable[str]) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text
