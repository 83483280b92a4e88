"""`iplosctl plan`: what apply would send, rendered as text, markdown or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iplosctl import output
from iplosctl.cli.app import app
from iplosctl.cli.options import (
    Format,
    JobsOpt,
    LateOpt,
    LockfileOpt,
    OfflineRevocationOpt,
    OnlyOpt,
    PathsArg,
    TodayOpt,
    parse_day,
    select,
)
from iplosctl.errors import EXIT_ERROR, UsageError
from iplosctl.plan import make_plan
from iplosctl.render import RENDERERS, summary_line
from iplosctl.savedplan import read_saved_plan, reviewed_differences, write_saved_plan


@app.command()
def plan(
    paths: PathsArg = None,
    out: Annotated[Path | None, typer.Option("--out", help="Save the plan for apply.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="text, markdown or json.")] = Format.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes to apply.")
    ] = False,
    only: OnlyOpt = None,
    today: TodayOpt = None,
    late: LateOpt = False,
    lockfile_path: LockfileOpt = None,
    offline_revocation: OfflineRevocationOpt = False,
    reviewed: Annotated[
        Path | None,
        typer.Option(
            "--reviewed",
            metavar="PLANFILE",
            help="Fail unless this plan equals a saved plan that was reviewed (CI on merge).",
        ),
    ] = None,
    jobs: JobsOpt = None,
) -> int:
    """Check the export against every pre-flight rule and show what apply would send."""
    day = parse_day(today)
    reviewed_plan = read_saved_plan(reviewed) if reviewed is not None else None
    manifests, broken = select(paths, only, reuse_parsed=True)
    if lockfile_path is not None and len(manifests) + len(broken) != 1:
        raise UsageError("--lockfile needs exactly one manifest")
    result = make_plan(
        manifests,
        broken=broken,
        today=day,
        late=late,
        lockfile_path=lockfile_path,
        offline_revocation=offline_revocation,
        jobs=jobs,
    )
    failures = list(result.errors)
    if reviewed is not None and reviewed_plan is not None:
        failures.extend(reviewed_differences(result, reviewed_plan, reviewed))
    if result.submissions or result.unplanned:
        rendered = RENDERERS[fmt.value](result)
        if fmt is Format.json:
            output.raw(rendered)
            output.note(summary_line(result))
        elif fmt is Format.text:
            output.out_highlighted(rendered.rstrip("\n"))
        else:
            output.out(rendered.rstrip("\n"))
    for line in failures:
        output.error(f"error: {line}")
    if out is not None and result.submissions:
        write_saved_plan(out, result)
        output.note(f"saved plan to {out}: run `iplosctl apply {out}` to send exactly this")
    if failures or result.unplanned:
        return EXIT_ERROR
    return result.exit_code(detailed=detailed_exitcode)
