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
from typing import Any

from iplosctl.atomic import write_atomic
from iplosctl.errors import InputError, Location, Problem
from iplosctl.plan import PLAN_FORMAT_VERSION, Plan, saved_form

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


def read_saved_plan(path: Path) -> dict[str, Any]:
    """Load and sanity-check a saved plan."""
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
    if (
        not isinstance(data, dict)
        or data.get("kind") != "iplosctl-saved-plan"
        or data.get("formatVersion") != PLAN_FORMAT_VERSION
    ):
        raise InputError(
            [
                Problem(
                    Location(str(path)),
                    "not a saved plan of this iplosctl "
                    "version (run `iplosctl plan --out FILE` again)",
                )
            ]
        )
    return data


def reviewed_differences(plan: Plan, reviewed: dict[str, Any], path: Path) -> list[str]:
    """One line per submission whose plan now differs from the reviewed saved plan.

    CI plans again at merge time and must send what the pull request showed: a
    submission that is new or changed in any digest means the reviewer saw
    something else, so the merge pipeline stops before anyone approves a send.
    Names and digest keys only: no personal data.
    """
    now = {s["manifest"]: s for s in saved_form(plan)["submissions"]}
    before = {s.get("manifest"): s for s in reviewed.get("submissions", [])}
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
    by_manifest: dict[str, dict[str, Any]]

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
