"""Terminal rendering, Terraform-like: summary line, then each submission, then what next."""

from __future__ import annotations

from iplosctl.plan import Plan, SubmissionPlan, UnplannedSubmission, plan_digest
from iplosctl.profiles import load_profile
from iplosctl.render.common import (
    certificate_lines,
    deadline_text,
    next_command,
    refs_text,
    route_text,
    summary_line,
    unplanned_next,
)
from iplosctl.summary import summary_rows


def _submission(s: SubmissionPlan) -> list[str]:
    lines = [
        f"{s.name}  ({s.municipality}, {s.year}, {s.environment}): {s.action.upper()}",
        f"  why: {s.reason}",
        f"  deadline: {deadline_text(s)}",
        f"  route: {route_text(s)}",
    ]
    if s.findings:
        lines.append("  findings:")
        for f in s.findings:
            refs = refs_text(f)
            lines.append(
                f"    {f.severity:<7} {f.rule:<18} {f.message}  [{f.count}]"
                + (f"\n{'':>28}{refs}" if refs else "")
            )
    if s.certificates:
        lines.append("  certificates:")
        lines.extend(f"    {line}" for line in certificate_lines(s))
    if s.revocation_note:
        lines.append(f"  revocation: {s.revocation_note}")
    if s.receipt_errors:
        lines.append("  receipt errors of the last attempt:")
        lines.extend(f"    {e['part']}: {e['code']} {e['text']}".rstrip() for e in s.receipt_errors)
    rows = summary_rows(s.summary, s.previous_summary, s.profile or load_profile(s.year))
    width = max(len(label) for label, _, _ in rows)
    lines.append(f"  summary{'':<{width - 5}}now    change")
    lines.extend(
        f"    {label:<{width}}  {value:<6} {delta}".rstrip() for label, value, delta in rows
    )
    if s.parts:
        lines.append(f"  payload digest: {s.payload_digest}")
        how = ", the export's files unchanged" if s.payload_format == "passthrough" else ""
        lines.append(f"  messages (attempt {s.attempt}{how}):")
        lines.extend(f"    {p.type:<8} {p.size_text(10)}  msgId {p.msg_id}" for p in s.parts)
    lines.append(f"  next: {next_command(s)}")
    return lines


def _unplanned(u: UnplannedSubmission) -> list[str]:
    return [
        f"{u.name}  ({u.manifest_path}): BLOCKED",
        "  why: it could not be planned:",
        *(f"    {reason}" for reason in u.reasons),
        f"  next: {unplanned_next(u)}",
    ]


def render_text(plan: Plan) -> str:
    out = [summary_line(plan)]
    if plan.submissions:
        out.append(f"plan digest: {plan_digest(plan)} (apply of the saved plan prints it too)")
    out.append("")
    for s in plan.submissions:
        out.extend(_submission(s))
        out.append("")
    for u in plan.unplanned:
        out.extend(_unplanned(u))
        out.append("")
    return "\n".join(out).rstrip() + "\n"
