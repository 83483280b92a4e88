"""Zero is suspicious: findings about what the export, read through its profile, did not hold.

A profile that names the wrong element reads a valid export as empty rather
than failing, and an empty submission looks like a municipality without
services. So the plan blocks when no recipient was read, when no recipient
has a service, and when a mapped field or item kind matched nothing in the
whole export (the message names the profile's expression, so the reader
knows to fix the profile, not the EPJ). Elements no mapping reads are one
warning: they may hold data the profile forgot.

These findings come out of `plan.analyse` with the rules' and are cached
with them. They carry counts and profile expressions, never values, and are
not switched off by `spec.rules` (a plan that sends nothing must not pass).
"""

from __future__ import annotations

from iplosctl.plugins import FieldCoverage
from iplosctl.privacy import count_text
from iplosctl.rules import Finding

RULE_NO_RECIPIENTS = "export-no-recipients"
RULE_NO_SERVICES = "export-no-services"
RULE_UNMATCHED = "profile-unmatched"
RULE_UNREAD = "export-unread"
#: how many unread element names the warning lists before "and N more"
UNREAD_SHOWN = 12
PLURAL = {
    "recipient": "recipients",
    "service": "services",
    "assessment": "assessments",
    "diagnosis": "diagnoses",
}


def _count(n: int) -> str:
    return count_text(n) if n < 5 else f"{n:,}"


def export_findings(
    *, recipients: int, services: int, coverage: FieldCoverage | None, profile: str
) -> list[Finding]:
    """The zero findings for one export. `profile` names the profile or mapping for messages."""
    out: list[Finding] = []
    if recipients == 0:
        out.append(
            Finding(
                RULE_NO_RECIPIENTS,
                "error",
                f"the export has no recipients: if it should, {profile} does not find its "
                "recipient element (check recipient.element, e.g. with "
                "`iplosctl format check`)",
                1,
            )
        )
        return out
    if services == 0:
        where = ""
        if coverage is not None and "service.element" in coverage.mapped:
            where = f" the profile's `{coverage.mapped['service.element']}` matched nothing in"
            where += f" {_count(recipients)} recipients ({profile});"
        out.append(
            Finding(
                RULE_NO_SERVICES,
                "error",
                f"no recipient has a service:{where} an IPLOS submission without services "
                "is not sent",
                1,
            )
        )
    if coverage is None:
        return out
    for key, expression in coverage.mapped.items():
        if key in coverage.optional:
            continue
        kind, _, name = key.partition(".")
        if name == "element":  # the item kind's own element (services: export-no-services)
            if kind != "service" and coverage.items.get(kind) == 0:
                out.append(_unmatched(expression, kind, recipients, "recipients", profile))
            continue
        items = coverage.items.get(kind, 0)
        if items > 0 and coverage.present.get(key, 0) == 0:
            plural = PLURAL.get(kind, kind)
            out.append(_unmatched(expression, key, items, plural, profile))
    if coverage.unread:
        shown = ", ".join(coverage.unread[:UNREAD_SHOWN])
        more = len(coverage.unread) - UNREAD_SHOWN
        if more > 0:
            shown += f" and {more} more"
        out.append(
            Finding(
                RULE_UNREAD,
                "warning",
                f"elements of the export that no mapping of {profile} reads: {shown} "
                "(map them if they hold IPLOS data)",
                len(coverage.unread),
            )
        )
    return out


def _unmatched(expression: str, key: str, n: int, plural: str, profile: str) -> Finding:
    return Finding(
        RULE_UNMATCHED,
        "error",
        f"the profile's `{expression}` ({key}) matched nothing in {_count(n)} {plural}: fix "
        f"{profile}, or mark it `optional: true` there if the export never has it",
        1,
    )
