"""Operator decisions that lead out of a state, recorded in the lockfile (DESIGN.md §4).

Two states can only be left by a person who knows something the tool cannot:

- `sent` with no receipt, ever: only KPR can say the message never arrived. After they
  confirm it, `iplosctl attempt abandon … --confirmed-by-register` records that.
- `journaled` (never confirmed sent) when the export has changed since, so it cannot be
  recovered with the same message ids: the operator states that the attempt never left
  the machine (`--never-sent`), or KPR confirms it never arrived.

Abandoning moves the attempt's `journaled` and `sent` parts to `abandoned` and appends a
decision `{at, by, action, reason, basis, parts}` to the attempt. The next plan then
proposes a new attempt, whose number, and so whose message ids, are new: an abandoned
attempt's ids are never sent again (apply only sends `journaled` parts, and a receipt
that still comes for an abandoned part is quarantined, not recorded).

`--never-sent` is refused as soon as one part of the attempt is `sent`: then the attempt
demonstrably left the machine and only the register can say what became of it.

For `journaled` parts the operator's word is not enough on a configured endpoint (issue
13: "allowed only when the transport can show nothing was accepted"): the command asks
the transport (`TransportPlugin.find_accepted`: the broker's queue, the outbox folder)
whether it holds any of the attempt's message ids. One found was accepted: refused. A
transport that cannot look (no hook, no read access, unreachable) shows nothing: refused
too, with the way out (`--confirmed-by-register` once KPR has confirmed). What the look
cannot see is a message a consumer already took; on NHN's queues that consumer is KPR,
which answers it with a receipt, and a receipt for an abandoned part is quarantined and
shown, never silently dropped. The embedded sandbox register consumes every message at
once, so in the sandbox the rehearsal keeps the operator's word.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from iplosctl import lockfile
from iplosctl.errors import IplosctlError, TransportError, UsageError
from iplosctl.lockfile import PartState
from iplosctl.locking import submission_lock
from iplosctl.manifest import Manifest
from iplosctl.privacy import scrub

#: shows, for the parts about to be abandoned as never sent, that none was accepted
#: (returns what shows it, for the output) or raises DecisionRefused saying why not
NeverSentProof = Callable[[list[lockfile.Part]], str]


class Basis(StrEnum):
    """What a decision to abandon rests on (the `--never-sent` / `--confirmed-by-register`
    flags); the lockfile records the value."""

    NEVER_SENT = "never-sent"
    CONFIRMED_BY_REGISTER = "confirmed-by-register"


NEVER_SENT = Basis.NEVER_SENT
CONFIRMED_BY_REGISTER = Basis.CONFIRMED_BY_REGISTER
BASES: tuple[Basis, ...] = tuple(Basis)
#: the states an operator's decision leads out of
_OPEN = frozenset({PartState.JOURNALED, PartState.SENT})
#: who decided, when `--by` is not given: the CI's user, else the login name
OPERATOR_ENV = ("IPLOSCTL_OPERATOR", "GITHUB_ACTOR", "GITLAB_USER_LOGIN")


class DecisionRefused(IplosctlError):
    """The decision is not allowed in the attempt's state (or not on that basis)."""


@dataclass(frozen=True)
class Abandoned:
    name: str
    attempt: int
    parts: tuple[str, ...]
    decision: lockfile.Decision
    serial: int


def default_operator() -> str:
    for name in OPERATOR_ENV:
        if value := os.environ.get(name, "").strip():
            return value
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _now() -> str:
    return lockfile.utc_now()


def check_abandon(attempt: lockfile.Attempt, basis: Basis | str) -> list[lockfile.Part]:
    """The parts abandoning `attempt` on `basis` would move, or DecisionRefused saying why not.

    Pure (no I/O), so the property test drives exactly the rule the command applies.
    """
    if basis not in BASES:
        raise UsageError(f"unknown basis {basis!r}: use {' or '.join(BASES)}")
    open_parts = [p for p in attempt.parts if p.state in _OPEN]
    if not open_parts:
        states = ", ".join(f"{p.type} {p.state}" for p in attempt.parts) or "no parts"
        raise DecisionRefused(
            f"attempt {attempt.number} has no journaled or sent part ({states}): there is "
            "nothing to abandon; run iplosctl plan for the next action"
        )
    sent = [p for p in attempt.parts if p.state not in (PartState.JOURNALED, PartState.ABANDONED)]
    if basis == NEVER_SENT and sent:
        shown = ", ".join(f"{p.type} {p.state}" for p in sent)
        raise DecisionRefused(
            f"attempt {attempt.number} left this machine ({shown}): only KPR can say that it "
            "never arrived; ask them, then run the same command with --confirmed-by-register"
        )
    return open_parts


def abandon(
    lock_path: Path,
    *,
    name: str,
    attempt_number: int,
    reason: str,
    basis: Basis | str,
    by: str | None = None,
    now: Callable[[], str] = _now,
    prove_never_sent: NeverSentProof | None = None,
) -> Abandoned:
    """Record the decision to abandon `attempt_number` of the lockfile at `lock_path`.

    With `prove_never_sent` (the CLI passes `transport_proof(manifest)`), a `never-sent`
    decision is recorded only once it shows that no journaled part was accepted.
    """
    reason = scrub(reason).strip()
    if not reason:
        raise UsageError("--reason is required: say why, for whoever reads the lockfile next")
    who = scrub(by or default_operator()).strip() or "unknown"
    with submission_lock(lock_path, "iplosctl attempt abandon"):
        lock = lockfile.load(lock_path)
        if lock is None or not lock.attempts:
            raise DecisionRefused(
                f"{lock_path}: no attempt recorded for {name}: nothing to abandon"
            )
        last = lock.attempts[-1]
        if attempt_number != last.number:
            raise DecisionRefused(
                f"attempt {attempt_number} is not the last attempt of {name} (that is "
                f"{last.number}); only the last attempt can be abandoned"
            )
        parts = check_abandon(last, basis)
        shown = ""
        if basis == NEVER_SENT and prove_never_sent is not None:
            shown = prove_never_sent(parts)
        for part in parts:
            lockfile.transition(part, PartState.ABANDONED)
        decision = lockfile.Decision(
            at=now(),
            by=who,
            action="abandon",
            reason=f"{reason} [{shown}]" if shown else reason,
            basis=Basis(basis).value,  # a plain str: the lockfile's YAML dumper needs one
            parts=[p.type for p in parts],
        )
        last.decisions.append(decision)
        lockfile.save(lock_path, lock)
        return Abandoned(name, last.number, tuple(p.type for p in parts), decision, lock.serial)


def transport_proof(manifest: Manifest) -> NeverSentProof | None:
    """The check `abandon --never-sent` runs for `manifest`: ask its transport whether it
    holds any of the parts' message ids (module docstring). None in the embedded sandbox."""
    if manifest.endpoint is None:
        return None

    def prove(parts: list[lockfile.Part]) -> str:
        from iplosctl import endpoint

        ids = {p.msg_id: p.type for p in parts}
        address = endpoint.addressing(manifest)
        way_out = "ask KPR whether it arrived, then use --confirmed-by-register if it did not"
        try:
            with endpoint.connect(manifest) as conn:
                find = getattr(conn.transport, "find_accepted", None)
                if find is None:
                    raise DecisionRefused(
                        f"the {manifest.endpoint.transport} transport cannot show which "  # type: ignore[union-attr]
                        f"messages it handed over, so nothing shows that attempt's parts were "
                        f"not accepted: {way_out}"
                    )
                found = find(address.to_queue, list(ids))
        except TransportError as exc:
            raise DecisionRefused(
                f"cannot look for the attempt's messages on queue {address.to_queue} "
                f"({exc.message}); nothing shows they were not accepted: {way_out}"
            ) from None
        if found:
            shown = ", ".join(f"{ids[i]} (msgId {i})" for i in sorted(found, key=list(ids).index))
            raise DecisionRefused(
                f"{shown} is on queue {address.to_queue}: the transport accepted it, so the "
                "attempt did leave this machine; wait for its receipt (iplosctl receipts), or "
                "if KPR confirms it never arrived, use --confirmed-by-register"
            )
        return f"none of {len(ids)} message id(s) on queue {address.to_queue}"

    return prove
