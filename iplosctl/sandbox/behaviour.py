"""sandbox.behaviour: how the sandbox register misbehaves on purpose.

Tests and rehearsals need the unhappy paths: a register that rejects everything, never
answers, answers twice, answers late, or reports on the error queue instead. The words
are the same for `iplosctl sandbox serve|attach --behaviour` and for
`IPLOSCTL_SANDBOX_BEHAVIOUR` in the embedded register.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from iplosctl.errors import UsageError


@dataclass(frozen=True)
class Behaviour:
    """How the sandbox misbehaves on purpose, for tests and rehearsals of the unhappy paths."""

    delay_seconds: float = 0
    never_answer: bool = False
    answer_twice: bool = False
    reject_all: bool = False
    error_queue_instead: bool = False
    #: quote the person id an error is about in DN, OT and error-queue descriptions, as a
    #: register's free text may, written `DDMMYY.NNNNN` (tests the one scrubber, issue 12)
    quote_ids: bool = False

    def describe(self) -> str:
        """The same words `parse_behaviour` reads, e.g. `answer-twice,delay=5`."""
        words = [
            name
            for name, on in (
                ("reject-all", self.reject_all),
                ("never-answer", self.never_answer),
                ("answer-twice", self.answer_twice),
                ("error-queue", self.error_queue_instead),
                ("quote-ids", self.quote_ids),
            )
            if on
        ]
        if self.delay_seconds:
            words.append(f"delay={self.delay_seconds:g}")
        return ",".join(words) or "normal"


_FLAGS = {
    "reject-all": "reject_all",
    "never-answer": "never_answer",
    "answer-twice": "answer_twice",
    "error-queue": "error_queue_instead",
    "quote-ids": "quote_ids",
}
BEHAVIOUR_HELP = (
    "comma-separated: normal, reject-all, never-answer, answer-twice, error-queue, quote-ids, "
    "delay=SECONDS"
)


def parse_behaviour(spec: str | None) -> Behaviour:
    """`"answer-twice,delay=5"` → Behaviour; UsageError naming the word it does not know."""
    behaviour = Behaviour()
    for raw in (spec or "").split(","):
        word = raw.strip().lower()
        if word in ("", "normal"):
            continue
        if word in _FLAGS:
            behaviour = replace(behaviour, **{_FLAGS[word]: True})
            continue
        name, _, value = word.partition("=")
        if name == "delay":
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < 86400:  # also refuses nan
                raise UsageError(f"sandbox behaviour {raw.strip()!r}: delay must be 0 to 86399 s")
            behaviour = replace(behaviour, delay_seconds=seconds)
            continue
        raise UsageError(f"unknown sandbox behaviour {raw.strip()!r}: use {BEHAVIOUR_HELP}")
    return behaviour
