"""Wording shared by every format, so text, markdown and json say the same thing."""

from __future__ import annotations

from iplosctl.plan import CHANGING, Action, Plan, SubmissionPlan, UnplannedSubmission, Window
from iplosctl.rules import Finding

ACTION_WORDS = [
    (Action.SUBMIT, "to submit"),
    (Action.RECOVER, "to recover"),
    (Action.CORRECT, "to correct"),
    (Action.RESUBMIT, "to resubmit"),
    (Action.WAIT, "waiting for receipts"),
    (Action.BLOCKED, "blocked"),
    (Action.NO_OP, "unchanged"),
]
#: shown in the summary line even at 0
_ALWAYS_COUNTED = (Action.SUBMIT, Action.CORRECT, Action.BLOCKED)


def summary_line(plan: Plan) -> str:
    """`Plan: 1 to submit, 0 to correct, 1 blocked.` — the line a reviewer reads first."""
    shown = [
        f"{plan.count(a)} {words}"
        for a, words in ACTION_WORDS
        if plan.count(a) or a in _ALWAYS_COUNTED
    ]
    return "Plan: " + ", ".join(shown) + "."


def next_command(s: SubmissionPlan) -> str:
    """The one command to run next for this submission."""
    target = str(s.manifest_path)
    if s.action in CHANGING:
        return f"iplosctl apply {target}"
    if s.action == Action.WAIT:
        return f"iplosctl receipts {target} --wait 10m"
    if s.action == Action.BLOCKED and s.way_out:
        return s.way_out
    if s.action == Action.BLOCKED:
        return f"fix the findings, then: iplosctl plan {target}"
    return "nothing to do"


def refs_text(f: Finding) -> str:
    if not f.records:
        return ""
    shown = ", ".join(str(r) for r in f.records)
    more = f.count - len(f.records)
    return f"records {shown}" + (f" and {more} more" if more > 0 else "")


def deadline_text(s: SubmissionPlan) -> str:
    d = s.deadline
    if d.window == Window.REHEARSAL:
        return "sandbox rehearsal: deadlines do not apply"
    if d.next is None:
        return f"closed: the last deadline ({d.last.isoformat()}) has passed"
    return f"{d.window}: next deadline {d.next.isoformat()} ({d.days_left} days left)"


def certificate_lines(s: SubmissionPlan) -> list[str]:
    """One line per certificate: role, days to expiry, chain and revocation verdicts."""
    return [
        f"{c.role}: {c.certificate}, {_days(c.days_left)} (until {c.not_after}), "
        f"chain {c.chain}, revocation {c.revocation}"
        for c in s.certificates
    ]


def _days(days: int) -> str:
    return f"EXPIRED {-days} day(s) ago" if days < 0 else f"{days} day(s) left"


def route_text(s: SubmissionPlan) -> str:
    """`to HER-id 8133973 queue 8133973_async via amqp amqps://…, namespace …; receipts from …`."""
    r = s.route
    if not r:
        return "unknown"
    if r.get("edi"):
        from iplosctl.endpoint import edi_route_text

        return edi_route_text(r["receiverHerId"], r["edi"])
    ns = f", namespace {r['namespace']}" if r.get("namespace") else ""
    return (
        f"to HER-id {r['receiverHerId']} queue {r['toQueue']} via {r['transport']} "
        f"{r['broker']}{ns}; receipts from {r['replyQueue']}, errors from {r['errorQueue']}"
    )


def unplanned_next(u: UnplannedSubmission) -> str:
    """What to do about a submission that could not be planned."""
    return f"fix the manifest or the export, then: iplosctl plan {u.manifest_path}"
