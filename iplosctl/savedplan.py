"""Saved plans (`plan --out`): what apply checks before sending exactly that.

A saved plan records, per submission, the digests of manifest, source and
payload, the lockfile's lineage and serial, the part digests and message
ids, and the tool version. No personal data: it is a CI artifact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

from iplosctl.atomic import write_atomic
from iplosctl.errors import InputError, Location, Problem
from iplosctl.plan import ACTIONS, PLAN_FORMAT_VERSION, Action, Plan, saved_form

SAVED_PLAN_KIND: Literal["iplosctl-saved-plan"] = "iplosctl-saved-plan"


class SavedPart(TypedDict):
    """One message part as planned (`PartPlan.as_dict`); the JSON plan shows the same."""

    type: str
    payloadDigest: str
    sizeBytes: int
    msgId: str
    #: only for a compressed part, so plans of parts under the limit are unchanged
    compression: NotRequired[str]
    sentBytes: NotRequired[int]


class SavedSubmission(TypedDict):
    """What a saved plan records per submission: the keys apply checks (`REVIEWED_KEYS`)."""

    name: str
    manifest: str
    action: Action
    manifestDigest: str
    sourceDigest: str
    payloadDigest: str
    profileDigest: str
    lineage: str
    serial: int
    attempt: int
    parts: list[SavedPart]


class SavedPlan(TypedDict):
    """`plan --out`'s file. TypedDicts, not classes: the JSON is the format, and apply
    reads the same dict it checks (`apply.check_saved`)."""

    formatVersion: str
    kind: Literal["iplosctl-saved-plan"]
    toolVersion: str
    createdAt: str
    submissions: list[SavedSubmission]
    #: the digest the reviewed comment showed (`plan.plan_digest`)
    planDigest: NotRequired[str]


#: what must be equal for a plan made now to be the plan a reviewer saw (`apply.check_saved`
#: refuses on the same keys; the part list adds the message ids the register will see)
REVIEWED_KEYS = (
    "manifestDigest",
    "sourceDigest",
    "payloadDigest",
    "profileDigest",
    "lineage",
    "serial",
    "attempt",
    "action",
    "parts",
)


def write_saved_plan(path: Path, plan: Plan) -> None:
    """Write atomically, so a CI artifact is never half a plan."""
    text = json.dumps(saved_form(plan), indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"))


def read_saved_plan(path: Path) -> SavedPlan:
    """Load a saved plan, checking that it has the shape this version writes."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError([Problem(Location(str(path)), "saved plan not found")]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", 0)
        raise InputError(
            [
                Problem(
                    Location(str(path), line), "not a saved plan (run `iplosctl plan --out FILE`)"
                )
            ]
        ) from None
    try:
        return _saved_plan(data)
    except _NotSavedPlan as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise InputError(
            [
                Problem(
                    Location(str(path)),
                    "not a saved plan of this iplosctl "
                    f"version{detail} (run `iplosctl plan --out FILE` again)",
                )
            ]
        ) from None


class _NotSavedPlan(ValueError):
    """Says which key of the file is missing or of the wrong type (names, never values)."""


def _saved_plan(data: object) -> SavedPlan:
    if (
        not isinstance(data, dict)
        or data.get("kind") != SAVED_PLAN_KIND
        or data.get("formatVersion") != PLAN_FORMAT_VERSION
    ):
        raise _NotSavedPlan()
    submissions = data.get("submissions")
    if not isinstance(submissions, list):
        raise _NotSavedPlan("no submissions list")
    plan: SavedPlan = {
        "formatVersion": PLAN_FORMAT_VERSION,
        "kind": SAVED_PLAN_KIND,
        "toolVersion": _text(data, "toolVersion"),
        "createdAt": _text(data, "createdAt"),
        "submissions": [_submission(s, n) for n, s in enumerate(submissions, 1)],
    }
    if "planDigest" in data:
        plan["planDigest"] = _text(data, "planDigest")
    return plan


def _submission(data: object, number: int) -> SavedSubmission:
    where = f"submission {number}"
    if not isinstance(data, dict):
        raise _NotSavedPlan(f"{where} is not an object")
    action = data.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise _NotSavedPlan(f"{where}: unknown action")
    parts = data.get("parts")
    if not isinstance(parts, list):
        raise _NotSavedPlan(f"{where}: no parts list")
    return {
        "name": _text(data, "name", where),
        "manifest": _text(data, "manifest", where),
        "action": Action(action),
        "manifestDigest": _text(data, "manifestDigest", where),
        "sourceDigest": _text(data, "sourceDigest", where),
        "payloadDigest": _text(data, "payloadDigest", where),
        "profileDigest": _text(data, "profileDigest", where),
        "lineage": _text(data, "lineage", where),
        "serial": _count(data, "serial", where),
        "attempt": _count(data, "attempt", where),
        "parts": [_part(p, f"{where} part {n}") for n, p in enumerate(parts, 1)],
    }


def _part(data: object, where: str) -> SavedPart:
    if not isinstance(data, dict):
        raise _NotSavedPlan(f"{where} is not an object")
    part: SavedPart = {
        "type": _text(data, "type", where),
        "payloadDigest": _text(data, "payloadDigest", where),
        "sizeBytes": _count(data, "sizeBytes", where),
        "msgId": _text(data, "msgId", where),
    }
    if "compression" in data:
        part["compression"] = _text(data, "compression", where)
        part["sentBytes"] = _count(data, "sentBytes", where)
    return part


def _text(data: dict[str, object], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _NotSavedPlan(f"{where + ': ' if where else ''}{key} missing or not a string")
    return value


def _count(data: dict[str, object], key: str, where: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _NotSavedPlan(f"{where}: {key} missing or not a number")
    return value


def reviewed_differences(plan: Plan, reviewed: SavedPlan, path: Path) -> list[str]:
    """One line per submission whose plan now differs from the reviewed saved plan.

    CI plans again at merge time and must send what the pull request showed: a
    submission that is new or changed in any digest means the reviewer saw
    something else, so the merge pipeline stops before anyone approves a send.
    Names and digest keys only: no personal data.
    """
    now = {s["manifest"]: s for s in saved_form(plan)["submissions"]}
    before = {s["manifest"]: s for s in reviewed["submissions"]}
    lines = []
    for manifest, current in sorted(now.items()):
        seen = before.get(manifest)
        if seen is None:
            lines.append(
                f"{manifest}: not in the reviewed plan {path}: "
                "open a pull request so its plan is reviewed"
            )
            continue
        changed = [key for key in REVIEWED_KEYS if seen.get(key) != current.get(key)]
        if changed:
            lines.append(
                f"{manifest}: differs from the reviewed plan {path} ({', '.join(changed)} "
                "changed since the review): plan it again in a pull request and review that"
            )
    # A reviewed submission not planned now (left out by --only, or its manifest removed)
    # sends nothing, so it is no difference.
    return lines


@dataclass(frozen=True)
class SavedSelection:
    """A saved plan given to `apply`: its file, its digest and its entry per manifest."""

    path: Path
    plan_digest: str | None
    by_manifest: dict[str, SavedSubmission]

    @property
    def manifest_paths(self) -> list[Path]:
        """The manifests the plan covers: apply validates and sends exactly these."""
        return [Path(m) for m in self.by_manifest]


def saved_plan_argument(paths: Sequence[Path] | None) -> SavedSelection | None:
    """The saved plan `apply` was given, or None when it was given manifests.

    A saved plan is one existing `.json` file (`plan --out`); manifests are YAML files
    or folders, so the suffix decides without reading anything else.
    """
    if not paths or len(paths) != 1 or paths[0].suffix != ".json" or not paths[0].is_file():
        return None
    data = read_saved_plan(paths[0])
    return SavedSelection(
        paths[0],
        data.get("planDigest"),
        {s["manifest"]: s for s in data["submissions"]},
    )
