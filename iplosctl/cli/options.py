"""What several commands share: the Annotated options, `--format`, and reading the manifests.

Defined once so the same flag reads and behaves the same in every command.
"""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import Annotated

import typer

from iplosctl import output
from iplosctl.durations import parse_duration
from iplosctl.errors import IplosctlError
from iplosctl.manifest import DEFAULT_PATH, Manifest, validate_paths
from iplosctl.manifest.checks import BrokenManifest
from iplosctl.sandbox.register import BEHAVIOUR_HELP

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Manifest files or folders (default: manifests/).", show_default=False),
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option("--only", help="Only submissions whose name matches (glob); repeatable."),
]
TodayOpt = Annotated[
    str | None, typer.Option("--today", help="Pretend today is YYYY-MM-DD (rehearsals, tests).")
]
LateOpt = Annotated[
    bool,
    typer.Option(
        "--late", help="Allow a submission after the last deadline (agree with KPR first)."
    ),
]
BehaviourOpt = Annotated[
    str | None,
    typer.Option("--behaviour", help=f"{BEHAVIOUR_HELP} (default: $IPLOSCTL_SANDBOX_BEHAVIOUR)."),
]
SchemaDirOpt = Annotated[
    Path | None,
    typer.Option("--schema-dir", help="Folder with MsgHead-v1_2.xsd: validate MsgHeads fully."),
]
OfflineRevocationOpt = Annotated[
    bool,
    typer.Option(
        "--offline-revocation",
        help="Go on when certificate revocation cannot be checked (no CRL file, CRL "
        "distribution point or OCSP responder reachable); the plan says so in capitals.",
    ),
]
LockfileOpt = Annotated[
    Path | None, typer.Option("--lockfile", help="Lockfile to use (only with one manifest).")
]
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        metavar="N",
        help="Submissions handled at once, in parallel processes (default: the number of "
        "cores); output keeps the order of -j 1.",
        show_default=False,
    ),
]


class Format(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def select(
    paths: list[Path] | None, only: list[str] | None, *, reuse_parsed: bool = False
) -> tuple[list[Manifest], list[BrokenManifest]]:
    """Validate like `iplosctl validate`, then keep going without the broken ones.

    One manifest with a missing export must not stop the other municipalities: each
    broken manifest's problems are printed here, and the caller reports it as that
    submission's error (and exits 1). `--only` selects before anything is reported.
    `reuse_parsed` (commands that only read and report): see `load_manifest`.
    """
    result = validate_paths(paths or [DEFAULT_PATH], reuse_parsed=reuse_parsed)
    if result.files == 0:
        shown = ", ".join(str(p) for p in paths or [DEFAULT_PATH])
        raise IplosctlError(f"no manifests found in {shown}")
    result = result.only(only)
    if only and not result.manifests and not result.broken:
        raise IplosctlError(f"--only {' '.join(only)} matches no submission")
    for warning in result.warnings:  # e.g. tls.verifyPeerName: false outside production
        output.note(f"warning: {warning}")
    for problem in result.problems:
        output.error(f"error: {problem}")
    return result.manifests, result.broken


def parse_day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def parse_wait(wait: str | None) -> float | None:
    if wait is None:
        return None
    try:
        return parse_duration(wait)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--wait") from None
