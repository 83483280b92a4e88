"""`iplosctl receipts`: collect the register's answers into the lockfiles and render them."""

from __future__ import annotations

from typing import Annotated

import typer

from iplosctl import output
from iplosctl.cli.app import app
from iplosctl.cli.options import (
    LockfileOpt,
    OfflineRevocationOpt,
    OnlyOpt,
    PathsArg,
    parse_wait,
    select,
)
from iplosctl.cli.receipts_view import collect_and_render
from iplosctl.errors import EXIT_ERROR, UsageError


@app.command()
def receipts(
    paths: PathsArg = None,
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="DURATION",
            help="Poll until every sent part is answered, at most this long (30s, 10m, 1h).",
        ),
    ] = None,
    only: OnlyOpt = None,
    lockfile_path: LockfileOpt = None,
    offline_revocation: OfflineRevocationOpt = False,
) -> int:
    """Collect the register's receipts (AppRec) and transport errors into the lockfiles."""
    wait_seconds = parse_wait(wait)
    manifests, broken = select(paths, only)
    if lockfile_path is not None and len(manifests) + len(broken) != 1:
        raise UsageError("--lockfile needs exactly one manifest")
    if offline_revocation:
        output.error(
            "warning: --offline-revocation: a receipt whose signer's revocation cannot be "
            "checked is accepted"
        )
    code = collect_and_render(
        manifests, wait_seconds, lockfile_path, offline_revocation=offline_revocation
    )
    return EXIT_ERROR if broken else code
