"""`receipts` over many submissions: one wait budget for all, and the exit code it comes to.

`--wait 10m` is the time the whole run may take, not ten minutes per municipality: each
submission gets what is left of it. The exit code (README, "Exit codes") is decided here,
not in the CLI: 1 when a part is rejected or has a transport error (or collecting failed),
else 75 when the wait ran out with receipts outstanding, else 0. Accepted with errors is 0
(the register took the data); the CLI warns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iplosctl.errors import EXIT_ERROR, EXIT_OK, EXIT_WAITING, IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.receipts import ReceiptsResult, collect_receipts


@dataclass(frozen=True)
class ReceiptOutcome:
    """One submission's receipts run: its result, or the lines of the error that stopped it."""

    manifest: Manifest
    result: ReceiptsResult | None = None
    errors: tuple[str, ...] = ()


@dataclass
class ReceiptTally:
    """What the outcomes so far add up to."""

    waited: bool
    failures: int = 0
    rejected: int = 0
    #: receipts still outstanding over all submissions
    waiting: int = 0
    outcomes: list[ReceiptOutcome] = field(default_factory=list)

    def add(self, outcome: ReceiptOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.result is None:
            self.failures += 1
            return
        self.waiting += outcome.result.outstanding
        if outcome.result.failed:
            self.rejected += 1

    @property
    def still_waiting(self) -> bool:
        """`--wait` ran out with receipts outstanding (without `--wait` nothing is awaited)."""
        return self.waited and self.waiting > 0

    @property
    def exit_code(self) -> int:
        if self.failures or self.rejected:
            return EXIT_ERROR
        return EXIT_WAITING if self.still_waiting else EXIT_OK


def collect_each(
    manifests: Sequence[Manifest],
    wait_seconds: float | None,
    *,
    lockfile_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    offline_revocation: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[ReceiptOutcome]:
    """Collect each manifest's receipts in turn, all within one budget of `wait_seconds`."""
    deadline = clock() + (wait_seconds or 0.0)
    for manifest in manifests:
        try:
            result = collect_receipts(
                manifest,
                wait_seconds=max(0.0, deadline - clock()) if wait_seconds else 0,
                lockfile_path=lockfile_path,
                progress=progress,
                offline_revocation=offline_revocation,
            )
        except IplosctlError as exc:
            yield ReceiptOutcome(manifest, errors=tuple(exc.lines()))
            continue
        yield ReceiptOutcome(manifest, result)
