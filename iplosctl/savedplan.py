"""Saved plans (`plan --out`): what apply checks before sending exactly that.

A saved plan records, per submission, the digests of manifest, source and
payload, the lockfile's lineage and serial, the part digests and message
ids, and the tool version. No personal data: it is a CI artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iplosctl.atomic import write_atomic
from iplosctl.errors import InputError, Location, Problem
from iplosctl.plan import PLAN_FORMAT_VERSION, Plan, saved_form


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
