"""The lockfile's state machine under random operator histories (issue 13.3).

Hypothesis drives plan/apply/receipts/crash/abandon/export changes over the real
`plan.decide`, `apply._journal`, `lockfile` (saved and loaded through the file, as a
crash would leave it) and `decisions.abandon`, with a fake transport and register in
place of the broker. After every step it checks that

- the state has a way out: the plan proposes a send or `no-op`, or it is `wait` /
  `blocked` and the command its reason names (receipts, fixing the export, abandoning)
  really leads to a plan that can send or is done;
- no message id of an abandoned attempt is ever sent again, a part recorded `sent` is
  never resent, and two attempts never share a message id.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from iplosctl import decisions, lockfile
from iplosctl.apply import _journal
from iplosctl.payload.msghead import message_id
from iplosctl.plan import CHANGING, decide
from iplosctl.rules.engine import Finding

PARTS = ("KPR_IPL", "KPR_IDE")
LINEAGE = "6f1f8f4e-1111-4c4c-9a9a-000000000001"
#: what the register does with a message that reaches the broker
VERDICTS = ("1", "2", "3", "lost", "error-queue", "silent")
RECEIPT_STATE = {"1": "accepted", "2": "rejected", "3": "accepted-with-errors"}


@dataclass
class FakeRegister:
    """The broker and KPR: what was sent, what arrived, what it will answer."""

    sends: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)

    def arrived(self, msg_id: str) -> bool:
        return msg_id in self.verdicts and self.verdicts[msg_id] != "lost"


class Crash(Exception):
    """The process died here (SIGKILL, power cut): nothing after it ran."""


class OperatorHistories(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="iplosctl-prop-"))
        self.path = self.folder / "kommune-2023.lock.yaml"
        self.register = FakeRegister()
        self.digest = "sha256:a"
        self.export_errors = False
        self.abandoned_ids: set[str] = set()

    # --- the world ---------------------------------------------------------------------

    def lock(self) -> lockfile.Lockfile | None:
        return lockfile.load(self.path)  # what a fresh process would read

    def analysis(self, digest: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(payload_digest=digest or self.digest, summary={"recipients": 9})

    def errors(self, has_errors: bool | None = None) -> list[Finding]:
        bad = self.export_errors if has_errors is None else has_errors
        return [Finding("person-id", "error", "wrong check digits", 1)] if bad else []

    def plan(self) -> tuple[str, str, int]:
        return decide(self.lock(), self.analysis(), self.errors())  # type: ignore[arg-type]

    # --- operations ----------------------------------------------------------------------

    @rule(digest=st.sampled_from(["sha256:a", "sha256:b", "sha256:c"]), bad=st.booleans())
    def change_export(self, digest: str, bad: bool) -> None:
        self.digest, self.export_errors = digest, bad

    @rule(
        crash=st.sampled_from(["none", "after-journal", "after-accept-0", "after-accept-1"]),
        verdicts=st.lists(st.sampled_from(VERDICTS), min_size=2, max_size=2),
    )
    def apply(self, crash: str, verdicts: list[str]) -> None:
        lock = self.lock()
        action, _reason, attempt = self.plan()
        if action not in CHANGING:
            return  # apply refuses (blocked, wait) or has nothing to do (no-op)
        if action != "recover" and lock is not None and lock.attempts:
            assert attempt > max(a.number for a in lock.attempts), "an attempt number reused"
        if action == "recover":
            assert lock is not None and lock.last_attempt is not None
            parts = [
                SimpleNamespace(
                    type=p.type,
                    msg_id=p.msg_id,
                    payload_digest=p.payload_digest,
                    size_bytes=p.size_bytes,
                )
                for p in lock.last_attempt.parts
            ]
        else:
            parts = [
                SimpleNamespace(
                    type=t,
                    msg_id=message_id(LINEAGE, attempt, t, f"{self.digest}/{t}"),
                    payload_digest=f"{self.digest}/{t}",
                    size_bytes=100,
                )
                for t in PARTS
            ]
        plan = SimpleNamespace(
            name="kommune-2023",
            lineage=LINEAGE,
            action=action,
            attempt=attempt,
            parts=parts,
            manifest_digest="sha256:m",
            source_digest=f"src-{self.digest}",
            payload_digest=self.digest,
        )
        if lock is None:
            lock = lockfile.Lockfile(submission="kommune-2023", lineage=LINEAGE)
        lock = _journal(lock, plan, self.analysis(), lockfile_now())  # type: ignore[arg-type]
        lockfile.save(self.path, lock)
        try:
            if crash == "after-journal":
                raise Crash
            last = lock.attempts[-1]
            for index, part in enumerate(p for p in last.parts if p.state == "journaled"):
                self.send(part, verdicts[index])
                if crash == f"after-accept-{index}":
                    raise Crash
                lockfile.transition(part, "sent")
                lockfile.save(self.path, lock)
        except Crash:
            pass  # the lockfile on disk is what survives

    def send(self, part: lockfile.Part, verdict: str) -> None:
        assert part.msg_id not in self.abandoned_ids, "an abandoned attempt's id was sent again"
        on_disk = self.lock()
        assert on_disk is not None
        found = on_disk.part(part.msg_id)
        assert found is not None and found[1].state == "journaled", "a sent part was resent"
        self.register.sends.append(part.msg_id)
        self.register.verdicts.setdefault(part.msg_id, verdict)  # a resend is a duplicate

    @rule()
    def receipts(self) -> None:
        """Record every answer that has come, as `receipts` does (a journaled part that was
        answered moves through `sent`; an answer for a decided part is quarantined)."""
        lock = self.lock()
        if lock is None:
            return
        changed = False
        for msg_id, verdict in self.register.verdicts.items():
            if verdict in ("lost", "silent"):
                continue
            found = lock.part(msg_id)
            assert found is not None
            part = found[1]
            if part.state not in ("journaled", "sent"):
                continue  # a duplicate, or an answer to an abandoned part: quarantined
            if part.state == "journaled":
                lockfile.transition(part, "sent")
            target = "transport-error" if verdict == "error-queue" else RECEIPT_STATE[verdict]
            lockfile.transition(part, target)
            changed = True
        if changed:
            lockfile.save(self.path, lock)

    @rule(basis=st.sampled_from(decisions.BASES))
    def abandon(self, basis: str) -> None:
        """An operator abandons the last attempt, telling the truth about it."""
        lock = self.lock()
        if lock is None or not lock.attempts:
            return
        last = lock.attempts[-1]
        ids = {p.msg_id for p in last.parts if p.state in ("journaled", "sent")}
        if basis == decisions.NEVER_SENT and ids & set(self.register.sends):
            return  # it did leave: an honest operator does not say otherwise
        if basis == decisions.CONFIRMED_BY_REGISTER and any(self.register.arrived(i) for i in ids):
            return  # KPR has it: they would not confirm that it never arrived
        try:
            decisions.abandon(
                self.path,
                name="kommune-2023",
                attempt_number=last.number,
                reason="test",
                basis=basis,
                by="property-test",
            )
        except decisions.DecisionRefused:
            return
        self.abandoned_ids |= ids

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def every_state_has_a_way_out(self) -> None:
        lock = self.lock()
        action, reason, _attempt = self.plan()
        assert action in ("submit", "recover", "correct", "resubmit", "wait", "no-op", "blocked")
        if action in CHANGING or action == "no-op":
            return
        assert lock is not None or action == "blocked"
        if action == "blocked" and "attempt abandon" not in reason:
            assert "fix the export or the manifest" in reason
            fixed = decide(lock, self.analysis(), self.errors(False))  # type: ignore[arg-type]
            assert fixed[0] != "blocked" or "attempt abandon" in fixed[1]
            return
        # wait, or a journaled attempt the export cannot recover: the named decision works
        assert lock is not None and lock.last_attempt is not None
        basis = (
            decisions.NEVER_SENT if "--never-sent" in reason else decisions.CONFIRMED_BY_REGISTER
        )
        assert "attempt abandon" in reason
        trial = copy.deepcopy(lock)
        for part in decisions.check_abandon(trial.attempts[-1], basis):
            lockfile.transition(part, "abandoned")
        after = decide(trial, self.analysis(), self.errors(False))  # type: ignore[arg-type]
        assert after[0] in CHANGING or after[0] == "no-op", after
        if after[0] in CHANGING:  # a new attempt: a new number, so new message ids
            assert after[2] > max(a.number for a in trial.attempts), after
            abandoned = {p.msg_id for p in trial.attempts[-1].parts if p.state == "abandoned"}
            new_ids = {message_id(LINEAGE, after[2], t, f"{self.digest}/{t}") for t in PARTS}
            assert not new_ids & abandoned
        if action == "blocked":  # restoring the export it was built from recovers it instead
            restored = self.analysis(lock.last_attempt.payload_digest)
            assert decide(lock, restored, [])[0] == "recover"  # type: ignore[arg-type]

    @invariant()
    def attempts_never_share_a_message_id(self) -> None:
        lock = self.lock()
        if lock is None:
            return
        ids = [p.msg_id for a in lock.attempts for p in a.parts]
        assert len(ids) == len(set(ids))
        numbers = [a.number for a in lock.attempts]
        assert numbers == sorted(set(numbers))


def lockfile_now():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime(2024, 1, 5, 12, tzinfo=dt.UTC)


OperatorHistories.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_operator_histories = OperatorHistories.TestCase
