"""The versioned JSON plan (`formatVersion: "1"`), for CI and other tools."""

from __future__ import annotations

import json
from typing import Any

from iplosctl.plan import PLAN_FORMAT_VERSION, Plan, SubmissionPlan, plan_digest
from iplosctl.render.common import next_command, summary_line, unplanned_next


def submission_dict(s: SubmissionPlan) -> dict[str, Any]:
    return {
        "name": s.name,
        "manifest": str(s.manifest_path),
        "lockfile": str(s.lockfile_path),
        "reportingYear": s.year,
        "environment": s.environment,
        "municipality": s.municipality,
        "action": s.action,
        "reason": s.reason,
        "blocked": s.blocked,
        "findings": [f.as_dict() for f in s.findings],
        "receiptErrors": list(s.receipt_errors),
        "certificates": [c.as_dict() for c in s.certificates],
        "revocationNote": s.revocation_note,
        "offlineRevocation": s.offline_revocation,
        "summary": s.summary,
        "previousSummary": s.previous_summary,
        "deadline": s.deadline.as_dict(),
        "route": s.route,
        "digests": {
            "manifest": s.manifest_digest,
            "source": s.source_digest,
            "payload": s.payload_digest,
            "profile": s.profile_digest,
        },
        "lineage": s.lineage,
        "serial": s.serial,
        "attempt": s.attempt,
        "parts": [p.as_dict() for p in s.parts],
        "payloadFormat": s.payload_format,
        "next": next_command(s),
    }


def render_json(plan: Plan) -> str:
    return (
        json.dumps(
            {
                "formatVersion": PLAN_FORMAT_VERSION,
                "toolVersion": plan.tool_version,
                "createdAt": plan.created_at,
                "summary": summary_line(plan),
                "planDigest": plan_digest(plan),
                "submissions": [submission_dict(s) for s in plan.submissions],
                # Submissions that could not be planned (broken manifest, unreadable export):
                # blocked, with one line per reason.
                "unplanned": [
                    {
                        "name": u.name,
                        "manifest": str(u.manifest_path),
                        "action": u.action,
                        "blocked": True,
                        "reasons": list(u.reasons),
                        "next": unplanned_next(u),
                    }
                    for u in plan.unplanned
                ],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
