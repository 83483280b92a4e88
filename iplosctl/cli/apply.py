"""`iplosctl apply`: send a saved plan or the manifests' current plan, then maybe wait."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from iplosctl import output
from iplosctl.apply import Progress
from iplosctl.apply_many import ApplyOutcome, apply_each
from iplosctl.cli.app import app
from iplosctl.cli.options import (
    JobsOpt,
    LateOpt,
    OfflineRevocationOpt,
    OnlyOpt,
    TodayOpt,
    parse_day,
    parse_wait,
    select,
)
from iplosctl.cli.receipts_view import collect_and_render
from iplosctl.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.plan import Plan, SubmissionPlan
from iplosctl.profiles import profile_for
from iplosctl.render import render_text
from iplosctl.savedplan import saved_plan_argument


@app.command()
def apply(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="A saved plan (plan --out), or manifest files/folders (default: manifests/).",
            show_default=False,
        ),
    ] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask for confirmation (CI).")
    ] = False,
    only: OnlyOpt = None,
    today: TodayOpt = None,
    late: LateOpt = False,
    wait: Annotated[
        str | None,
        typer.Option("--wait", metavar="DURATION", help="Then wait for the receipts (30s, 10m)."),
    ] = None,
    offline_revocation: OfflineRevocationOpt = False,
    jobs: JobsOpt = None,
) -> int:
    """Send exactly the reviewed plan: MsgHead, CMS sign+encrypt, AMQP 1.0."""
    day = parse_day(today)
    wait_seconds = parse_wait(wait)
    saved = saved_plan_argument(paths)
    if saved is not None:
        if saved.plan_digest is not None:  # the digest the reviewed comment showed
            output.note(f"applying saved plan {saved.path}, plan digest {saved.plan_digest}")
        manifests, broken = select(saved.manifest_paths, only)
    else:
        manifests, broken = select(paths, only)
    outcomes = apply_each(
        manifests,
        saved=saved.by_manifest if saved is not None else {},
        again=str(saved.path) if saved is not None else None,
        today=day,
        late=late,
        offline_revocation=offline_revocation,
        approve=None if auto_approve or saved is not None else _ask,
        progress=_progress_bar,
        jobs=jobs,
    )
    failures = len(broken)  # reported by select; the other submissions still apply
    for outcome in outcomes:
        if outcome.interrupted:
            output.error(f"interrupted: {outcome.interrupted}")
            return EXIT_INTERRUPTED
        failures += _render(outcome, waiting=wait_seconds is not None)
    if wait_seconds is not None:
        code = collect_and_render(manifests, wait_seconds, offline_revocation=offline_revocation)
        return EXIT_ERROR if failures else code
    return EXIT_ERROR if failures else EXIT_OK


def _ask(plan: SubmissionPlan) -> bool:
    output.out(render_text(Plan((plan,))).rstrip("\n"))
    if not sys.stdin.isatty():
        raise IplosctlError(
            "refusing to apply without confirmation: no terminal to ask on; "
            "use --auto-approve or apply a saved plan"
        )
    return typer.confirm(f"Send {plan.name} ({plan.action}, attempt {plan.attempt})?")


@contextmanager
def _progress_bar(manifest: Manifest) -> Iterator[Progress]:
    parts = len(profile_for(manifest).message_parts)
    # the bar starts with the first step, after the question was answered:
    # drawn earlier it hid "Send …? [y/N]" (issue 13.1)
    with output.lazy_progress(f"{manifest.name}: sending", total=parts) as advance:
        yield lambda part, step: advance(f"{part} {step}", step == "sent")


def _render(outcome: ApplyOutcome, *, waiting: bool) -> int:
    """Print one submission's outcome; 1 when it failed."""
    for line in outcome.errors:
        output.error(f"error: {line}")
    result = outcome.result
    if result is None:
        return 1
    if not result.sent:
        output.out(f"{result.name}: {result.action}: {result.skipped_reason}")
        return 0
    for part in result.sent:
        output.out(
            f"{result.name}: sent {part.type} msgId {part.msg_id} "
            f"({part.size_bytes:,} bytes, attempt {result.attempt})"
        )
    if not waiting:
        output.note(f"next: iplosctl receipts {outcome.manifest.path} --wait 10m")
    return 0
