"""Receipts as `receipts` and `apply --wait` print them, one submission at a time.

Apart from the `receipts` command so that `apply` uses it without registering `receipts`
before itself (command modules register on import).
"""

from __future__ import annotations

from pathlib import Path

from iplosctl import output
from iplosctl.manifest import Manifest
from iplosctl.receipt_outcome import ReceiptOutcome, ReceiptTally, collect_each
from iplosctl.receipts import detail_lines, summary_line


def collect_and_render(
    manifests: list[Manifest],
    wait_seconds: float | None,
    lockfile_path: Path | None = None,
    *,
    offline_revocation: bool = False,
) -> int:
    """Collect (`receipt_outcome.collect_each`), print each submission as it comes, and
    return the exit code the tally decides (`apply --wait` ends with this too)."""
    tally = ReceiptTally(waited=wait_seconds is not None)
    for outcome in collect_each(
        manifests,
        wait_seconds,
        lockfile_path=lockfile_path,
        progress=output.note if output.is_terminal() else None,
        offline_revocation=offline_revocation,
    ):
        tally.add(outcome)
        _render(outcome)
    if tally.still_waiting:
        output.error(
            f"still waiting for {tally.waiting} receipt(s): run `iplosctl receipts --wait` "
            "again later; never resend before they are checked"
        )
    return tally.exit_code


def _render(outcome: ReceiptOutcome) -> None:
    manifest, result = outcome.manifest, outcome.result
    for line in outcome.errors:
        output.error(f"error: {manifest.name}: {line}")
    if result is None:
        return
    output.out(summary_line(result))
    for line in detail_lines(result):
        output.out(line)
    if result.failed:
        what = ", ".join(f"{part} {state}" for part, state in result.failed)
        output.error(
            f"error: {manifest.name}: attempt {result.attempt} failed ({what}): run "
            f"`iplosctl plan {manifest.path}` for the register's errors, fix them, then apply "
            "(resubmit)"
        )
    elif result.with_errors:
        output.note(
            f"warning: {manifest.name}: attempt {result.attempt} was accepted with errors "
            f"({', '.join(result.with_errors)}): read them above; a correction may be due"
        )
