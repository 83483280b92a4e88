"""`apply` over many submissions: one after the other with a question each, or in parallel.

Each submission is applied on its own (its own lockfile and lock, `apply.apply_submission`)
and comes back as an `ApplyOutcome`, in the order of the manifests whatever `jobs` is.
Errors are outcomes, not exceptions, so one municipality's broken export never stops the
other forty-nine. Parallel only when nobody is asked: a confirmation prompt needs the
terminal, one submission at a time.

^C: in this process, the submission being applied reports where the interrupt left its
lockfile (`interrupted_state`) and nothing after it starts. In parallel, the workers ignore
SIGINT and finish the submission in hand (a half-sent submission helps nobody), the ones
not started are not started, and the first of those reports its (unchanged) lockfile.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iplosctl import lockfile
from iplosctl.apply import ApplyResult, Progress, apply_submission
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest
from iplosctl.parallel import run_ordered
from iplosctl.plan import SubmissionPlan
from iplosctl.savedplan import SavedSubmission

#: a progress display around one submission's send (only in this process)
ProgressFor = Callable[[Manifest], AbstractContextManager[Progress]]


@dataclass(frozen=True)
class ApplyOutcome:
    """What applying one manifest came to: a result, error lines, or an interrupt."""

    manifest: Manifest
    result: ApplyResult | None = None
    errors: tuple[str, ...] = ()
    #: set when ^C stopped it: where the lockfile stands and the command that goes on
    interrupted: str = ""


def file_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def interrupted_state(manifest: Manifest, before: bytes | None, again: str) -> str:
    """Where an interrupted apply left the lockfile, and the command that goes on from there."""
    path = manifest.lockfile_path
    if file_bytes(path) == before:
        return f"{manifest.name}: {path} is unchanged: nothing was journaled, nothing was sent"
    lock = lockfile.load(path)
    last = lock.last_attempt if lock else None
    if last is None:  # cannot happen: apply only ever writes attempts
        return f"{manifest.name}: {path} holds no attempt"
    states = ", ".join(f"{p.type} {p.state}" for p in last.parts)
    if "journaled" in last.states:
        return (
            f"{manifest.name}: attempt {last.number} is journaled in {path} ({states}); a "
            f"journaled part may or may not have left: run `iplosctl apply {again}` again to "
            "resend it with the same message ids (the register drops duplicates)"
        )
    return (
        f"{manifest.name}: attempt {last.number} is sent ({states}, {path}): next: "
        f"iplosctl receipts {manifest.path} --wait 10m"
    )


def _no_progress(_manifest: Manifest) -> AbstractContextManager[Progress]:
    return contextlib.nullcontext(lambda part, step: None)


def apply_one(
    manifest: Manifest,
    *,
    saved: Mapping[str, SavedSubmission],
    again: str | None,
    today: dt.date | None,
    late: bool,
    offline_revocation: bool,
    approve: Callable[[SubmissionPlan], bool] | None = None,
    progress: ProgressFor = _no_progress,
) -> ApplyOutcome:
    """Apply one manifest (with its saved-plan entry, if any) and say how it went."""
    before = file_bytes(manifest.lockfile_path)
    try:
        with progress(manifest) as advance:
            result = apply_submission(
                manifest,
                saved=saved.get(str(manifest.path)),
                approve=approve or (lambda _plan: True),
                today=today,
                late=late,
                progress=advance,
                offline_revocation=offline_revocation,
            )
    except IplosctlError as exc:
        return ApplyOutcome(manifest, errors=tuple(exc.lines()))
    except KeyboardInterrupt:
        state = interrupted_state(manifest, before, again or str(manifest.path))
        return ApplyOutcome(manifest, interrupted=state)
    return ApplyOutcome(manifest, result)


def apply_each(
    manifests: Sequence[Manifest],
    *,
    saved: Mapping[str, SavedSubmission],
    again: str | None = None,
    today: dt.date | None = None,
    late: bool = False,
    offline_revocation: bool = False,
    approve: Callable[[SubmissionPlan], bool] | None = None,
    progress: ProgressFor = _no_progress,
    jobs: int | None = 1,
) -> Iterator[ApplyOutcome]:
    """One outcome per manifest, in order; stops after the first interrupted one.

    `approve` (a question on the terminal) and `progress` work in this process only, so
    with `approve` the submissions go one by one, and in parallel no progress is drawn.
    `again` is the argument to give `apply` to go on after an interrupt (a saved plan's
    path; default each manifest's own path).
    """
    common: dict[str, Any] = {
        "saved": saved,
        "again": again,
        "today": today,
        "late": late,
        "offline_revocation": offline_revocation,
    }
    if approve is not None or jobs == 1 or len(manifests) <= 1:
        for manifest in manifests:
            outcome = apply_one(manifest, approve=approve, progress=progress, **common)
            yield outcome
            if outcome.interrupted:
                return
        return
    # The first submission goes alone: whatever one-time set-up it does (the embedded
    # sandbox's state folder and test PKI; the PKI is also under a file lock) is in place
    # before the others start, so no worker pays for or races over it.
    first = apply_one(manifests[0], **common)
    yield first
    if first.interrupted:
        return
    rest = manifests[1:]
    before = {str(m.path): file_bytes(m.lockfile_path) for m in rest}
    done = 0
    try:
        for outcome in run_ordered(functools.partial(apply_one, **common), rest, jobs=jobs):
            done += 1
            yield outcome
    except KeyboardInterrupt:
        if done < len(rest):
            manifest = rest[done]
            state = interrupted_state(
                manifest, before[str(manifest.path)], again or str(manifest.path)
            )
            yield ApplyOutcome(manifest, interrupted=state)
