"""The lockfile: what was sent for one submission series, and what came back.

One `<name>.lock.yaml` beside each manifest, committed to git. It holds
digests, counts, message ids, timestamps and receipt codes, never personal
data. It is written atomically (temp file, fsync, rename, fsync of the
folder) so a crash leaves the old or the new file, never half of one; every
write bumps `serial`, and `lineage` names the series for its whole life.
Keys are sorted and the layout is stable, so its diff reads well in review.

Part states (DESIGN.md §4; the README's "States and ways out" has the full table):
    journaled → sent → accepted | accepted-with-errors | rejected
    journaled | sent → transport-error
    journaled | sent → abandoned   (only by an operator's recorded decision)
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from iplosctl import yamlio
from iplosctl.atomic import write_atomic
from iplosctl.errors import InputError, IplosctlError, Location, Problem
from iplosctl.privacy import scrub

LOCKFILE_VERSION = 1


class PartState(StrEnum):
    """Where one part stands. A StrEnum: the lockfile holds the value, and a member equals
    (and hashes as) its string, so code that still compares plain strings keeps working."""

    JOURNALED = "journaled"
    SENT = "sent"
    ACCEPTED = "accepted"
    ACCEPTED_WITH_ERRORS = "accepted-with-errors"
    REJECTED = "rejected"
    TRANSPORT_ERROR = "transport-error"
    ABANDONED = "abandoned"


STATES: tuple[PartState, ...] = tuple(PartState)
#: AppRec status code (kodeverk 8258) → the state its receipt puts a part in
RECEIPT_STATES: dict[str, PartState] = {
    "1": PartState.ACCEPTED,
    "2": PartState.REJECTED,
    "3": PartState.ACCEPTED_WITH_ERRORS,
}
_TRANSITIONS: dict[PartState, frozenset[PartState]] = {
    PartState.JOURNALED: frozenset(
        {PartState.SENT, PartState.TRANSPORT_ERROR, PartState.ABANDONED}
    ),
    PartState.SENT: frozenset(
        {
            PartState.ACCEPTED,
            PartState.ACCEPTED_WITH_ERRORS,
            PartState.REJECTED,
            PartState.TRANSPORT_ERROR,
            PartState.ABANDONED,
        }
    ),
}
MAX_LOCKFILE_BYTES = 20_000_000


class LockfileError(IplosctlError):
    """The lockfile is unreadable, of an unknown version, or a transition is impossible."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class ReceiptError:
    """One `Error` of an AppRec, verbatim (V, S, DN, OT)."""

    code: str
    system: str = ""
    text: str = ""
    original_text: str = ""


@dataclass
class Receipt:
    status: str
    receipt_id: str = ""
    received_at: str = ""
    errors: list[ReceiptError] = field(default_factory=list)


@dataclass
class Part:
    """One message of an attempt (KPR_IPL, KPR_IDE)."""

    type: str
    msg_id: str
    payload_digest: str
    state: PartState = PartState.JOURNALED
    size_bytes: int = 0
    journaled_at: str = ""
    sent_at: str = ""
    receipt_at: str = ""
    receipt: Receipt | None = None
    transport_error: dict[str, str] | None = None
    #: `RefDoc/Compression` the message was journaled with ("gzip"), "" if plain: a
    #: recover resends the same encoding (payload/compression.py)
    compression: str = ""

    def __post_init__(self) -> None:
        # callers that still name states as strings get the member (ValueError if unknown)
        self.state = PartState(self.state)


@dataclass
class Decision:
    """An operator's decision that leads out of a state: who, when, why (DESIGN.md §4).

    `basis` is what the decision rests on (`never-sent`: the operator states the attempt
    never left the machine; `confirmed-by-register`: KPR confirmed it never arrived);
    `parts` the part types it moved.
    """

    at: str
    by: str
    action: str
    reason: str
    basis: str = ""
    parts: list[str] = field(default_factory=list)


@dataclass
class Attempt:
    number: int
    created_at: str
    manifest_digest: str
    source_digest: str
    payload_digest: str
    summary: dict[str, Any]
    parts: list[Part]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def abandoned(self) -> bool:
        """An operator abandoned it: its message ids are never sent again."""
        return PartState.ABANDONED in self.states

    @property
    def states(self) -> set[PartState]:
        return {p.state for p in self.parts}

    @property
    def accepted(self) -> bool:
        return bool(self.parts) and self.states <= {
            PartState.ACCEPTED,
            PartState.ACCEPTED_WITH_ERRORS,
        }


@dataclass
class Lockfile:
    submission: str
    lineage: str
    serial: int = 0
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def last_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def last_accepted(self) -> Attempt | None:
        return next((a for a in reversed(self.attempts) if a.accepted), None)

    def part(self, msg_id: str) -> tuple[Attempt, Part] | None:
        """The attempt and part a message id belongs to."""
        for attempt in self.attempts:
            for part in attempt.parts:
                if part.msg_id == msg_id:
                    return attempt, part
        return None


def new_lockfile(submission: str) -> Lockfile:
    return Lockfile(submission=submission, lineage=str(uuid.uuid4()))


def transition(part: Part, state: PartState | str) -> None:
    """Move a part along the state machine, refusing impossible moves.

    A plain string is taken too (and stored as its PartState), for callers that still
    name states as strings.
    """
    if state not in _TRANSITIONS.get(part.state, frozenset()):
        raise LockfileError(
            f"part {part.type} ({part.msg_id}) cannot go from {part.state} to {state}"
        )
    part.state = PartState(state)


# --- serialisation ------------------------------------------------------------


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "", [], {})}


def _to_data(lock: Lockfile) -> dict[str, Any]:
    def part(p: Part) -> dict[str, Any]:
        receipt = None
        if p.receipt is not None:
            receipt = _drop_empty(
                {
                    "status": p.receipt.status,
                    "receiptId": p.receipt.receipt_id,
                    "receivedAt": p.receipt.received_at,
                    "errors": [
                        _drop_empty(
                            {
                                # free text from the register: scrubbed on every write,
                                # whoever recorded it (the lockfile is committed)
                                "code": scrub(e.code),
                                "system": scrub(e.system),
                                "text": scrub(e.text),
                                "originalText": scrub(e.original_text),
                            }
                        )
                        for e in p.receipt.errors
                    ],
                }
            )
        return _drop_empty(
            {
                "type": p.type,
                "msgId": p.msg_id,
                "payloadDigest": p.payload_digest,
                "state": str(p.state),  # the safe YAML dumper knows plain str only
                "sizeBytes": p.size_bytes,
                "journaledAt": p.journaled_at,
                "compression": p.compression,
                "sentAt": p.sent_at,
                "receiptAt": p.receipt_at,
                "receipt": receipt,
                "transportError": (
                    {k: scrub(v) for k, v in p.transport_error.items()}
                    if p.transport_error
                    else None
                ),
            }
        )

    return {
        "lockfileVersion": LOCKFILE_VERSION,
        "submission": lock.submission,
        "lineage": lock.lineage,
        "serial": lock.serial,
        "attempts": [
            {
                "number": a.number,
                "createdAt": a.created_at,
                "manifestDigest": a.manifest_digest,
                "sourceDigest": a.source_digest,
                "payloadDigest": a.payload_digest,
                "summary": a.summary,
                "parts": [part(p) for p in a.parts],
                **(
                    {"decisions": [_drop_empty(dict(d.__dict__)) for d in a.decisions]}
                    if a.decisions
                    else {}
                ),
            }
            for a in lock.attempts
        ],
    }


def _sorted(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _sorted(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [_sorted(v) for v in node]
    return node


@functools.cache
def _dumper() -> YAML:
    """One emitter for every save: libyaml's when ruamel.yaml.clib is there.

    apply saves the lockfile after every part it sends; with the pure-Python emitter,
    built afresh each time, that was a tenth of the time to send a 1 MB part.
    """
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.width = 4096  # digests on one line: a wrapped value makes a noisy diff
    yaml.sort_base_mapping_type_on_output = True  # type: ignore[assignment]  # typed by its None default
    return yaml


def dumps(lock: Lockfile) -> str:
    """The lockfile's text: sorted keys, block style, stable across runs."""
    yaml = _dumper()
    out = io.StringIO()
    out.write(
        "# iplosctl lockfile: written by iplosctl, reviewed in pull requests, never edited.\n"
    )
    yaml.dump(_sorted(_to_data(lock)), out)
    return out.getvalue()


def _from_data(data: dict[str, Any]) -> Lockfile:
    def receipt(r: dict[str, Any] | None) -> Receipt | None:
        if not r:
            return None
        return Receipt(
            status=str(r["status"]),
            receipt_id=r.get("receiptId", ""),
            received_at=r.get("receivedAt", ""),
            errors=[
                ReceiptError(
                    e["code"], e.get("system", ""), e.get("text", ""), e.get("originalText", "")
                )
                for e in r.get("errors", [])
            ],
        )

    return Lockfile(
        submission=data["submission"],
        lineage=data["lineage"],
        serial=int(data["serial"]),
        attempts=[
            Attempt(
                number=int(a["number"]),
                created_at=a.get("createdAt", ""),
                manifest_digest=a.get("manifestDigest", ""),
                source_digest=a.get("sourceDigest", ""),
                payload_digest=a.get("payloadDigest", ""),
                summary=dict(a.get("summary", {})),
                parts=[
                    Part(
                        type=p["type"],
                        msg_id=p["msgId"],
                        payload_digest=p["payloadDigest"],
                        state=_known_state(p["state"]),
                        size_bytes=int(p.get("sizeBytes", 0)),
                        journaled_at=p.get("journaledAt", ""),
                        sent_at=p.get("sentAt", ""),
                        receipt_at=p.get("receiptAt", ""),
                        receipt=receipt(p.get("receipt")),
                        transport_error=p.get("transportError"),
                        compression=str(p.get("compression", "")),
                    )
                    for p in a.get("parts", [])
                ],
                decisions=[
                    Decision(
                        at=str(d["at"]),
                        by=str(d["by"]),
                        action=str(d["action"]),
                        reason=str(d["reason"]),
                        basis=str(d.get("basis", "")),
                        parts=[str(t) for t in d.get("parts", [])],
                    )
                    for d in a.get("decisions", [])
                ],
            )
            for a in data.get("attempts", [])
        ],
    )


def _known_state(state: Any) -> PartState:
    """A state this version knows; anything else is damage, never guessed at."""
    if not isinstance(state, str) or state not in STATES:
        raise ValueError(f"state {state!r}")
    return PartState(state)


def load(path: Path) -> Lockfile | None:
    """The lockfile at `path`, or None when the series has never been planned to disk."""
    if not path.exists():
        return None
    root = yamlio.load(path, what="lockfile")
    data = yamlio.to_plain(root)
    name = str(path)
    if not isinstance(data, dict) or data.get("lockfileVersion") != LOCKFILE_VERSION:
        version = data.get("lockfileVersion") if isinstance(data, dict) else None
        raise InputError(
            [
                Problem(
                    Location(name, 1, 1),
                    f"lockfile version {version!r} is not {LOCKFILE_VERSION}: "
                    "upgrade iplosctl or restore the file from git",
                )
            ]
        )
    try:
        return _from_data(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            [
                Problem(
                    Location(name),
                    f"damaged lockfile (missing or wrong {exc}): restore it from git",
                )
            ]
        ) from None


def save(path: Path, lock: Lockfile) -> None:
    """Bump the serial and write atomically: temp file, fsync, rename, fsync the folder."""
    lock.serial += 1
    text = dumps(lock)
    try:
        write_atomic(path, text.encode("utf-8"))
    except BaseException:
        lock.serial -= 1
        raise
