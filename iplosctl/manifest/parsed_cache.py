"""A manifest's parsed form, kept between runs: its data and where each key stands.

ruamel's round-trip parser keeps the line and column of every node, which every warning
and error about a manifest points at, but it is pure Python: of re-planning 356
unchanged manifests (2.5 s) it took about 1.3 s. The data and the positions are a small
JSON document, so a run stores them under the digest of the manifest's text and the next
run with the same text reads them back instead of parsing: the same data (it came from
the same parse) and the same positions (`yamlio.position` reads either form).

`spec.testPersons` holds real names and person ids, which must never leave the manifest
(docs/design.md §5). Its value is therefore not stored: the cache keeps only which
lines of the text hold it, and a hit parses those few lines again from the manifest
itself. Before a manifest is stored, that re-parse is done once and compared with the
full parse (data and every position); a manifest where it differs (flow style, an odd
layout) or that says `testPersons` anywhere else is simply not cached. Since the key is
the digest of the text, a hit reads the same lines that were checked.

The loader `keep`s only a manifest that passed the schema (no unknown key anywhere, so
no value under a misspelt `testPerson:` can get in) and a hit skips the schema check;
anything else is parsed, checked and reported as before, each time. The key covers the
text, iplosctl's and ruamel's versions, the schema's digest and this format: a change of
any of them parses again. The folder is private to the user (0700), like the plan cache
beside it; a cache that cannot be written or read only costs time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ruamel.yaml

from iplosctl import __version__, yamlio
from iplosctl.atomic import write_atomic
from iplosctl.errors import InputError
from iplosctl.private_files import private_dir

#: bump when what is stored changes shape
FORMAT = 4

#: the subtree whose values are personal data: re-read from the text, never stored
PRIVATE = ("spec", "testPersons")
PRIVATE_KEY = PRIVATE[-1]

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Parsed:
    """A kept manifest's plain data and the positions `yamlio.position` needs."""

    data: dict[str, Any]
    root: yamlio.Positions


@dataclass(frozen=True)
class _Span:
    """Lines `first`..`last` (1-based, inclusive) of the text, indented by `indent`."""

    first: int
    last: int
    indent: int


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iplosctl" / "manifests"


def _key(text: str, schema: str) -> str:
    salt = f"{FORMAT}\0{__version__}\0{ruamel.yaml.__version__}\0{schema}\0"
    return hashlib.sha256((salt + text).encode("utf-8")).hexdigest()


def read(text: str, *, name: str, schema: str) -> Parsed | None:
    """The kept parse of `text` if there is one (it passed the schema named `schema`)."""
    return _read(_key(text, schema), text, name)


def keep(text: str, *, name: str, schema: str, data: dict[str, Any], root: Any) -> None:
    """Keep a parse of `text` that passed the schema named `schema` (`root`: the ruamel
    tree). Nothing is kept where `_storable` says no; a folder that cannot be written
    only costs time."""
    with contextlib.suppress(OSError, ValueError):
        stored = _storable(text, name, data, yamlio.Positions.of(root))
        if stored is not None:
            folder = private_dir(_cache_dir())
            path = folder / f"{_key(text, schema)}.json"
            write_atomic(path, json.dumps(stored).encode("utf-8"), durable=False)


def _under(path: PathKey) -> bool:
    return path[: len(PRIVATE)] == PRIVATE


def _storable(
    text: str, name: str, data: dict[str, Any], positions: yamlio.Positions
) -> dict[str, Any] | None:
    """What may be written for this manifest, or None when it must not be cached."""
    if any(PRIVATE_KEY in path and not _under(path) for path in positions.at):
        return None
    public = {path: at for path, at in positions.at.items() if not _under(path)}
    stored: dict[str, Any] = {
        "data": data,
        "positions": yamlio.Positions(public).as_json(),
        "private": None,
    }
    if PRIVATE not in positions.at:
        return stored
    span = _span(text, positions)
    if span is None:
        return None
    reread = _reread(text, name, span)
    private = {path: at for path, at in positions.at.items() if _under(path)}
    if reread is None or reread != (data["spec"][PRIVATE_KEY], private):
        return None
    stored["data"] = {**data, "spec": {**data["spec"], PRIVATE_KEY: None}}
    stored["private"] = [span.first, span.last, span.indent]
    return stored


def _span(text: str, positions: yamlio.Positions) -> _Span | None:
    """The lines from the `testPersons` key to just before the next key outside it."""
    first, col = positions.at[PRIVATE]
    if _shares_line(positions, first):
        return None
    after = [line for path, (line, _) in positions.at.items() if not _under(path) and line > first]
    last = (min(after) - 1) if after else text.count("\n") + 1
    return _Span(first, last, col - 1)


def _shares_line(positions: yamlio.Positions, line: int) -> bool:
    """True when a key outside the private subtree, other than its parents, sits on `line`."""
    parents = {PRIVATE[:depth] for depth in range(1, len(PRIVATE))}
    return any(
        at[0] == line and not _under(path) and path not in parents
        for path, at in positions.at.items()
    )


def _reread(text: str, name: str, span: _Span) -> tuple[Any, dict[PathKey, tuple[int, int]]] | None:
    """The private subtree's data and positions, parsed from its own lines of `text`."""
    lines = [
        "" if line.lstrip().startswith("#") else line
        for line in text.split("\n")[span.first - 1 : span.last]
    ]
    if any(line[: span.indent].strip() for line in lines):
        return None
    snippet = "\n".join(line[span.indent :] for line in lines) + "\n"
    try:
        root = yamlio.loads(snippet, name=name, what="manifest")
    except InputError:
        return None
    if not isinstance(root, dict) or list(root) != [PRIVATE_KEY]:
        return None
    shift = len(PRIVATE) - 1
    at = {
        (*PRIVATE[:shift], *path): (line + span.first - 1, col + span.indent)
        for path, (line, col) in yamlio.Positions.of(root).at.items()
    }
    return yamlio.to_plain(root[PRIVATE_KEY]), at


def _read(key: str, text: str, name: str) -> Parsed | None:
    try:
        stored = json.loads((_cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
        data, positions = stored["data"], yamlio.Positions.from_json(stored["positions"])
        private = stored["private"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    if private is None:
        return Parsed(data, positions)
    try:
        span = _Span(*(int(n) for n in private))
        spec = data["spec"]
    except (TypeError, ValueError, KeyError):
        return None
    reread = _reread(text, name, span)
    if reread is None or not isinstance(spec, dict):
        return None
    value, at = reread
    return Parsed(
        {**data, "spec": {**spec, PRIVATE_KEY: value}},
        yamlio.Positions({**positions.at, **at}),
    )
