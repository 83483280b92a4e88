"""Plausibility: a count that jumps is more often a wrong export than a changed municipality.

A correction that goes from 198 to 29,997 recipients, or a year whose home-nursing
count halves, passes every per-record rule; the register would accept it and the
municipality's statistics would be wrong for a year. So the plan compares the summary
with two earlier ones and warns (never blocks: real changes happen) when a count
changes by at least `MIN_SHARE` and at least `MIN_PERSONS`:

- the last accepted attempt of this submission (a correction of the same year);
- last year's accepted submission of the same municipality: a manifest beside this one
  (same folder) with the same kommunenummer and the year before, and its lockfile.

Only counts of 5 or more on both sides are compared: a `<5` is suppressed on purpose
and says nothing precise. Messages carry counts only (no record, no person).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from iplosctl import lockfile
from iplosctl.errors import IplosctlError
from iplosctl.manifest import Manifest, load_manifest
from iplosctl.rules import Finding

RULE_ID = "plausibility"
#: a change of at least half, and of at least 20 persons, is worth a second look
MIN_SHARE = 0.5
MIN_PERSONS = 20


def plausibility_findings(
    summary: Mapping[str, Any], previous: Mapping[str, Any] | None, against: str
) -> list[Finding]:
    """Warnings for recipients and per-service-code counts that jumped since `against`."""
    if not previous:
        return []
    pairs: list[tuple[str, object, object]] = [
        ("recipients", summary.get("recipients"), previous.get("recipients"))
    ]
    now_codes = summary.get("perServiceCode") or {}
    before_codes = previous.get("perServiceCode") or {}
    pairs += [
        (f"users of service code {code}", now_codes.get(code, 0), before_codes.get(code, 0))
        for code in sorted(set(now_codes) | set(before_codes), key=_code_order)
    ]
    return [
        Finding(
            RULE_ID,
            "warning",
            f"{what} changed from {before:,} to {now:,} ({_percent(now, before)}) since "
            f"{against}: check that the export is complete and of the right year",
            1,
        )
        for what, now, before in pairs
        if _comparable(now) and _comparable(before) and _jumped(now, before)
    ]


def _jumped(now: int, before: int) -> bool:
    diff = abs(now - before)
    return diff >= MIN_PERSONS and diff >= MIN_SHARE * max(before, 1)


def _comparable(value: object) -> TypeGuard[int]:
    """An exact count: 0, or 5 and more (`<5` is suppressed, so not comparable)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _percent(now: int, before: int) -> str:
    if before == 0:
        return "new"
    return f"{100 * (now - before) / before:+.0f} %"


def _code_order(code: str) -> tuple[int, str]:
    return (int(code), code) if code.isdigit() else (10**6, code)


def previous_year_summary(
    manifest: Manifest, candidates: Sequence[Path] | None = None
) -> tuple[str, dict[str, Any]] | None:
    """(description, summary) of last year's accepted submission beside this manifest.

    `candidates` (from `last_year_candidates`) are the files beside it that may be last
    year's manifest; without them the folder is looked at now.
    """
    if candidates is None:
        candidates = last_year_candidates([manifest])[0]
    for other in _loaded(candidates):
        if (
            other.municipality.number == manifest.municipality.number
            and other.reporting_year == manifest.reporting_year - 1
        ):
            try:
                lock = lockfile.load(other.lockfile_path)
            except IplosctlError:
                return None  # that lockfile's own commands report it
            accepted = lock.last_accepted if lock else None
            if accepted is not None:
                return (f"the {other.reporting_year} submission {other.name}", accepted.summary)
    return None


def last_year_candidates(manifests: Sequence[Manifest]) -> list[tuple[Path, ...]]:
    """For each manifest, the manifest files beside it that may be of the year before.

    Each folder is looked at once: a plan of 356 manifests in one folder looked at all
    356 files for each of them (127,000 stat calls, a third of an unchanged re-plan).
    Most of a fleet's manifests are of the year being planned: a glance at the raw text
    (`_years_named`) spares loading them; a file naming no year at all may be any year.
    """
    listings: dict[Path, tuple[tuple[Path, frozenset[int]], ...]] = {}
    for folder in dict.fromkeys(m.path.parent for m in manifests):
        listings[folder] = _listing(folder)
    return [
        tuple(
            path
            for path, named in listings[m.path.parent]
            if not named or m.reporting_year - 1 in named
        )
        for m in manifests
    ]


def _listing(folder: Path) -> tuple[tuple[Path, frozenset[int]], ...]:
    """The folder's manifest files in name order, each with the years its text names."""
    try:
        names = tuple(sorted(os.listdir(folder)))
    except OSError:
        return ()
    found: list[tuple[Path, frozenset[int]]] = []
    for path in _yaml_files(folder, names):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((path, _years_named(path, stat.st_mtime_ns, stat.st_size)))
    return tuple(found)


def _loaded(paths: Iterable[Path]) -> Iterator[Manifest]:
    """The manifests among `paths` that load (each file version is parsed once)."""
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        manifest = _load(path, stat.st_mtime_ns, stat.st_size)
        if manifest is not None:
            yield manifest


@functools.lru_cache(maxsize=64)
def _yaml_files(folder: Path, names: tuple[str, ...]) -> tuple[Path, ...]:
    """The folder's manifest files in name order, built once per listing: planning 356
    manifests globbed the folder and sorted its Paths 356 times, 0.7 s of sorting alone.
    Keyed by the names themselves, not the folder's mtime, whose granularity can hide a
    file added in the same tick."""
    return tuple(
        folder / name
        for name in names
        if name.endswith((".yaml", ".yml"))
        and not name.endswith((".lock.yaml", ".lock.yml"))
        and not name.startswith(".")  # as glob("*") skipped hidden files
    )


_REPORTING_YEAR = re.compile(r"""reportingYear['"]?\s*:\s*['"]?(\d+)""")


@functools.lru_cache(maxsize=4096)
def _years_named(path: Path, _mtime_ns: int, _size: int) -> frozenset[int]:
    """Every year a `reportingYear:` in the file's text names (comments too): the manifest's
    own is among them. Empty when none is found or the file cannot be read: then it is
    loaded as before."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return frozenset()
    return frozenset(int(y) for y in _REPORTING_YEAR.findall(text))


@functools.lru_cache(maxsize=1024)
def _load(path: Path, _mtime_ns: int, _size: int) -> Manifest | None:
    """One parse per file version: fifty manifests in a folder are read once, not 2,500 times."""
    try:
        return load_manifest(path, reuse_parsed=True)  # only compared, never sent with
    except IplosctlError:
        return None
