"""The plan as a pull-request comment: summary first, details folded, under 60,000 characters.

GitHub refuses comments over 65,536 characters. Fifty municipalities with
many findings each would exceed that, so details shrink in steps, and the
submissions a reviewer must read shrink last: clean ones (nothing to send, no
findings) first, then changes without findings, then those with warnings, and
blocked ones only when nothing else is left. Within a step, record lists go
before whole sections are summarised to one line, largest first. Submissions
that could not be planned at all are never cut: their reasons are short.
"""

from __future__ import annotations

from iplosctl.plan import Action, Plan, SubmissionPlan, UnplannedSubmission, plan_digest
from iplosctl.profiles import load_profile
from iplosctl.render.common import (
    deadline_text,
    next_command,
    refs_text,
    route_text,
    summary_line,
    unplanned_next,
)
from iplosctl.summary import summary_rows

LIMIT = 60_000
ICONS: dict[Action, str] = {
    Action.SUBMIT: "🟢",
    Action.RECOVER: "🟠",
    Action.CORRECT: "🟡",
    Action.RESUBMIT: "🟡",
    Action.WAIT: "⏳",
    Action.BLOCKED: "⛔",
    Action.NO_OP: "⚪",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _details(s: SubmissionPlan, *, with_refs: bool) -> str:
    lines = [
        f"<details><summary>{ICONS.get(s.action, '')} <b>{s.name}</b> "
        f"({_cell(s.municipality)}, {s.year}, {s.environment}): <b>{s.action}</b></summary>",
        "",
        f"**Why:** {_cell(s.reason)}  ",
        f"**Deadline:** {deadline_text(s)}  ",
        f"**Route:** {_cell(route_text(s))}  ",
        f"**Next:** `{next_command(s)}`",
        "",
    ]
    if s.findings:
        lines += ["| severity | rule | finding | count |", "|---|---|---|---|"]
        for f in s.findings:
            refs = f"<br>{refs_text(f)}" if with_refs and f.records else ""
            lines.append(f"| {f.severity} | `{f.rule}` | {_cell(f.message)}{refs} | {f.count} |")
        lines.append("")
    if s.revocation_note:
        icon = "⚠️ " if s.offline_revocation else ""
        lines += [f"**Revocation:** {icon}{_cell(s.revocation_note)}", ""]
    if s.certificates:
        lines += [
            "| certificate | days left | until | chain | revocation |",
            "|---|---:|---|---|---|",
        ]
        lines += [
            f"| {c.role}: {_cell(c.certificate)} | {c.days_left} | {c.not_after} | "
            f"{_cell(c.chain)} | {c.revocation} |"
            for c in s.certificates
        ]
        lines.append("")
    if s.receipt_errors:
        lines += ["Receipt errors of the last attempt:", ""]
        lines += [f"- {e['part']}: `{e['code']}` {_cell(e['text'])}" for e in s.receipt_errors]
        lines.append("")
    lines += ["| summary | now | change |", "|---|---:|---|"]
    profile = s.profile or load_profile(s.year)
    lines += [
        f"| {_cell(label)} | {value} | {delta} |"
        for label, value, delta in summary_rows(s.summary, s.previous_summary, profile)
    ]
    if s.parts:
        lines += [
            "",
            f"Messages (attempt {s.attempt}"
            + (", the export's files unchanged" if s.payload_format == "passthrough" else "")
            + "): "
            + ", ".join(f"`{p.type}` {p.size_text()}" for p in s.parts)
            + f"; payload `{s.payload_digest}`",
        ]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _one_line(s: SubmissionPlan) -> str:
    errors = sum(1 for f in s.findings if f.severity == "error")
    warnings = sum(1 for f in s.findings if f.severity == "warning")
    offline = " ⚠️ OFFLINE REVOCATION: certificates not checked for revocation;" * bool(
        s.offline_revocation
    )
    return (
        f"- {ICONS.get(s.action, '')} **{s.name}**: {s.action} ({errors} error, {warnings} "
        f"warning findings;{offline} details in the JSON plan)\n"
    )


def _unplanned(u: UnplannedSubmission) -> str:
    lines = [
        f"<details open><summary>{ICONS[Action.BLOCKED]} <b>{u.name}</b> "
        f"(<code>{_cell(str(u.manifest_path))}</code>): <b>blocked</b></summary>",
        "",
        "**Why:** it could not be planned:",
        "",
        *(f"- {_cell(reason)}" for reason in u.reasons),
        "",
        f"**Next:** `{unplanned_next(u)}`",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def importance(s: SubmissionPlan) -> int:
    """How much a reviewer needs this section whole: 0 clean … 3 blocked or erroneous."""
    severities = {f.severity for f in s.findings}
    if s.blocked or "error" in severities or s.receipt_errors:
        return 3
    if "warning" in severities:
        return 2
    if s.changes or s.findings:
        return 1
    return 0


def render_markdown(plan: Plan) -> str:
    head = [
        "### iplosctl plan",
        "",
        f"**{summary_line(plan)}**",
        "",
        *(
            [f"Plan digest `{plan_digest(plan)}`: `apply` of the saved plan prints the same.", ""]
            if plan.submissions
            else []
        ),
        "| submission | year | environment | action | errors | warnings |",
        "|---|---|---|---|---:|---:|",
    ]
    for s in plan.submissions:
        errors = sum(1 for f in s.findings if f.severity == "error")
        warnings = sum(1 for f in s.findings if f.severity == "warning")
        head.append(
            f"| {s.name} | {s.year} | {s.environment} | {ICONS.get(s.action, '')} "
            f"{s.action} | {errors} | {warnings} |"
        )
    for u in plan.unplanned:
        head.append(
            f"| {u.name} | ? | ? | {ICONS[Action.BLOCKED]} blocked | {len(u.reasons)} | 0 |"
        )
    head.append("")
    header = "\n".join(head) + "\n"
    footer = (
        f"\n<sub>iplosctl {plan.tool_version} · counts below 5 shown as &lt;5 · "
        "no personal data</sub>\n"
    )
    unplanned = "".join(_unplanned(u) for u in plan.unplanned)
    sections = [_details(s, with_refs=True) for s in plan.submissions]
    budget = LIMIT - len(header) - len(footer) - len(unplanned)
    # Least needed level first; within a level, record lists before whole sections, and
    # the largest section first (it frees the most).
    for level in range(4):
        order = sorted(
            (i for i, s in enumerate(plan.submissions) if importance(s) == level),
            key=lambda i: -len(sections[i]),
        )
        for shrink in (lambda s: _details(s, with_refs=False), _one_line):
            for i in order:
                if sum(map(len, sections)) <= budget:
                    return header + unplanned + "".join(sections) + footer
                sections[i] = shrink(plan.submissions[i])
    return header + unplanned + "".join(sections) + footer
