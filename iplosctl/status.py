"""status: where each submission stands, and the one command to run next.

Reads the lockfile and the quarantine, and asks the plan (cached, so cheap
when the export is unchanged) for the action. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from iplosctl import endpoint, lockfile
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.manifest.checks import BrokenManifest
from iplosctl.plan import Action, DeadlineWindow, plan_submission
from iplosctl.privacy import scrub
from iplosctl.receipts import list_quarantine
from iplosctl.render.common import next_command


@dataclass
class SubmissionStatus:
    name: str
    manifest: str
    year: int | None
    environment: str
    #: None when the submission could not be planned
    deadline: DeadlineWindow | None = None
    #: the plan's action, or "error" when it could not be planned
    action: Action | Literal["error", ""] = ""
    reason: str = ""
    attempt: dict[str, Any] | None = None
    quarantined: list[dict[str, str]] = field(default_factory=list)
    next: str = ""
    #: receiver HER-id, queues, broker and namespace (endpoint.Route.as_dict)
    route: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["deadline"] = self.deadline.as_dict() if self.deadline else {}
        return out


def submission_status(manifest: Manifest, *, today: dt.date | None = None) -> SubmissionStatus:
    status = SubmissionStatus(
        manifest.name, str(manifest.path), manifest.reporting_year, manifest.environment
    )
    try:
        plan = plan_submission(manifest, today=today)
    except IplosctlError as exc:
        status.action, status.reason = "error", scrub(exc.lines()[0])
        status.next = f"fix the input, then: iplosctl plan {manifest.path}"
    else:
        status.deadline, status.action, status.reason = plan.deadline, plan.action, plan.reason
        status.next = next_command(plan)
    try:
        status.route = endpoint.route(manifest).as_dict()
    except IplosctlError:
        status.route = None
    lock = lockfile.load(manifest.lockfile_path)
    last = lock.last_attempt if lock else None
    if last is not None:
        status.attempt = {
            "number": last.number,
            "createdAt": last.created_at,
            "parts": [
                {
                    "type": p.type,
                    "msgId": p.msg_id,
                    "state": p.state,
                    # "gzip" when journaled compressed (RefDoc/Compression), else ""
                    "compression": p.compression,
                    "receiptStatus": p.receipt.status if p.receipt else None,
                    "codes": [scrub(e.code) for e in p.receipt.errors] if p.receipt else [],
                    "transportError": (
                        scrub(p.transport_error["condition"])
                        if p.transport_error and "condition" in p.transport_error
                        else None
                    ),
                }
                for p in last.parts
            ],
        }
    status.quarantined = [
        # a quarantine file may come from an older iplosctl: its reason is scrubbed again
        {"kind": q.kind, "reason": scrub(q.reason), "at": q.quarantined_at}
        for q in list_quarantine(manifest)
    ]
    return status


def broken_status(broken: BrokenManifest) -> SubmissionStatus:
    """A manifest that cannot be used is that submission's error; the others go on."""
    first = str(broken.problems[0]) if broken.problems else "the manifest cannot be read"
    return SubmissionStatus(
        broken.label,
        str(broken.path),
        None,
        "unknown",
        action="error",
        reason=f"the manifest cannot be used: {first}",
        next=f"fix the manifest, then: iplosctl validate {broken.path}",
    )


def render_status(statuses: list[SubmissionStatus]) -> str:
    lines: list[str] = []
    for s in statuses:
        d = s.deadline
        if d is None:
            window = "unknown"
        elif d.next is None:
            window = str(d.window)
        else:
            window = f"{d.window}, next deadline {d.next.isoformat()} ({d.days_left} days left)"
        lines += [
            f"{s.name}  ({s.year or '?'}, {s.environment})",
            f"  deadline:   {window}",
            f"  state:      {s.action}: {s.reason}",
        ]
        if s.route and s.route.get("edi"):
            e = s.route["edi"]
            lines += [
                f"  sends to:   {e['toAddress']} (HER-id {s.route['receiverHerId']}) via edi "
                f"{e['smtp']} from {e['fromAddress']}",
                f"  reads:      receipts from {e['imap']} folder {e['folder']}",
            ]
        elif s.route:
            r = s.route
            ns = f", namespace {r['namespace']}" if r.get("namespace") else ""
            lines += [
                f"  sends to:   HER-id {r['receiverHerId']} queue {r['toQueue']} via "
                f"{r['transport']} {r['broker']}{ns}",
                f"  reads:      receipts {r['replyQueue']}, errors {r['errorQueue']}",
            ]
        if s.attempt:
            lines.append(f"  attempt {s.attempt['number']} ({s.attempt['createdAt']}):")
            for p in s.attempt["parts"]:
                receipt = f"receipt {p['receiptStatus']}" if p["receiptStatus"] else "no receipt"
                codes = f" [{', '.join(p['codes'])}]" if p["codes"] else ""
                error = f" transport error {p['transportError']}" if p["transportError"] else ""
                packed = f", sent {p['compression']}-compressed" if p.get("compression") else ""
                lines.append(f"    {p['type']:<8} {p['state']:<21} {receipt}{codes}{error}{packed}")
        else:
            lines.append("  attempt:    none yet")
        if s.quarantined:
            lines.append(f"  quarantined receipts: {len(s.quarantined)}")
            lines += [f"    {q['at']} {q['kind']}: {q['reason']}" for q in s.quarantined]
        lines += [f"  next:       {s.next}", ""]
    return "\n".join(lines).rstrip() + "\n"
