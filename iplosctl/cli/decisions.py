"""`iplosctl attempt abandon` and `iplosctl lock force-unlock`: an operator's decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iplosctl import output
from iplosctl.cli.app import attempt_app, lock_app
from iplosctl.cli.options import LockfileOpt, select
from iplosctl.decisions import CONFIRMED_BY_REGISTER, NEVER_SENT, abandon, transport_proof
from iplosctl.errors import EXIT_ERROR, EXIT_OK, UsageError
from iplosctl.locking import force_unlock


@attempt_app.command("abandon")
def attempt_abandon(
    manifest_path: Annotated[Path, typer.Argument(help="The submission's manifest.")],
    attempt: Annotated[
        int, typer.Option("--attempt", min=1, help="The attempt's number (the last one).")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why, for whoever reads the lockfile next.")
    ],
    never_sent: Annotated[
        bool,
        typer.Option(
            "--never-sent",
            help="You state that the attempt never left this machine (journaled parts only).",
        ),
    ] = False,
    confirmed_by_register: Annotated[
        bool,
        typer.Option(
            "--confirmed-by-register", help="KPR confirmed that the attempt never arrived."
        ),
    ] = False,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who decides (default: $IPLOSCTL_OPERATOR, CI user, login)."),
    ] = None,
    lockfile_path: LockfileOpt = None,
) -> int:
    """Abandon an attempt that will never be answered or never left: the next plan sends a new
    attempt with new message ids, and the abandoned ids are never sent again."""

    if never_sent == confirmed_by_register:
        raise UsageError("say what the decision rests on: --never-sent or --confirmed-by-register")
    manifests, broken = select([manifest_path], None)
    if broken:
        return EXIT_ERROR  # its problems were printed; nothing was recorded
    if len(manifests) != 1:
        raise UsageError("attempt abandon takes exactly one manifest")
    manifest = manifests[0]
    done = abandon(
        lockfile_path or manifest.lockfile_path,
        name=manifest.name,
        attempt_number=attempt,
        reason=reason,
        basis=NEVER_SENT if never_sent else CONFIRMED_BY_REGISTER,
        by=by,
        prove_never_sent=transport_proof(manifest),
    )
    output.out(
        f"{done.name}: attempt {done.attempt} abandoned ({', '.join(done.parts)}) by "
        f"{done.decision.by} at {done.decision.at} (lockfile serial {done.serial})"
    )
    output.note(f"next: iplosctl plan {manifest.path} (a new attempt, new message ids)")
    return EXIT_OK


@lock_app.command("force-unlock")
def lock_force_unlock(
    lock_id: Annotated[str, typer.Argument(help="The id the 'lock held' message shows.")],
    lockfile_path: Annotated[Path, typer.Argument(help="The submission's .lock.yaml.")],
) -> int:
    """Remove the lock of a dead apply (only if the id matches)."""

    force_unlock(lockfile_path, lock_id)
    output.note(f"removed lock {lock_id} of {lockfile_path}")
    return EXIT_OK
