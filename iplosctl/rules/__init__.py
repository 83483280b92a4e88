"""Pre-flight rules: the engine, and rule packs loaded through `iplosctl.rules`."""

from __future__ import annotations

from iplosctl import plugins
from iplosctl.errors import PluginError
from iplosctl.rules.engine import Finding, Hit, RecordRef, Rule, RuleContext, RuleRun


def load_rules() -> list[Rule]:
    """Every installed rule pack's rules; two rules with one id are fatal."""
    out: list[Rule] = []
    seen: dict[str, str] = {}
    for name in plugins.installed("rules"):
        pack = plugins.load("rules", name)
        for rule in pack() if callable(pack) else pack:
            if rule.id in seen:
                raise PluginError(
                    f"rule id {rule.id!r} is defined by rule packs {seen[rule.id]!r} "
                    f"and {name!r}: uninstall one of them"
                )
            seen[rule.id] = name
            out.append(rule)
    if not out:
        # Zero is suspicious: a plan without rules would say SUBMIT for anything.
        raise PluginError(
            "no pre-flight rules are loaded (no rule pack installed, or none yields a rule): "
            "reinstall iplosctl; a plan without the register's checks is refused"
        )
    return out


__all__ = ["Finding", "Hit", "RecordRef", "Rule", "RuleContext", "RuleRun", "load_rules"]
