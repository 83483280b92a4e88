"""`iplosctl status` and `iplosctl support-bundle`: where each submission stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from iplosctl import output
from iplosctl.cli.app import app
from iplosctl.cli.options import Format, OnlyOpt, PathsArg, TodayOpt, parse_day, select
from iplosctl.errors import EXIT_ERROR, EXIT_OK
from iplosctl.status import broken_status, render_status, submission_status
from iplosctl.support_bundle import build_support_bundle


@app.command()
def status(
    paths: PathsArg = None,
    fmt: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.text,
    only: OnlyOpt = None,
    today: TodayOpt = None,
) -> int:
    """Per submission: deadline window, last attempt, receipts, quarantine, what to do next."""

    day = parse_day(today)
    manifests, broken = select(paths, only, reuse_parsed=True)
    statuses = [submission_status(m, today=day) for m in manifests]
    statuses += [broken_status(b) for b in broken]
    if fmt is Format.json:
        output.raw(
            json.dumps(
                {"formatVersion": "1", "submissions": [s.as_dict() for s in statuses]}, indent=2
            )
        )
    else:
        output.out_highlighted(render_status(statuses).rstrip("\n"))
    return EXIT_ERROR if any(s.action == "error" for s in statuses) else EXIT_OK


@app.command("support-bundle")
def support_bundle(
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Zip file to write (attach it).")
    ],
    paths: PathsArg = None,
    only: OnlyOpt = None,
    today: TodayOpt = None,
) -> int:
    """Zip what to attach when reporting a problem to the register: no personal data or secrets."""

    day = parse_day(today)
    # Exactly when a manifest is broken or an export is missing is when a bundle is needed:
    # it is written for the usable manifests and names the problems of the others.
    manifests, broken = select(paths, only)  # parsed afresh: a report states what is there
    written = build_support_bundle(manifests, out, today=day, broken=broken)
    output.out(str(written))
    output.note(
        f"wrote {written}: versions, digests, MsgIds, states and receipt codes, without "
        "personal data or secrets; attach it to your report (addresses in its README.txt)"
    )
    return EXIT_OK
