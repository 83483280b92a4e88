"""YAML set up once: round-trip loading that keeps line and column of every node.

Manifests are written by people and reviewed in pull requests, so every error
must point at a line. Reading is defensive: the file's size is checked before
it is read (a 50 MB file is refused without loading it), binary and non-UTF-8
files are refused with the byte position, and a UTF-8 byte-order mark is
accepted because Windows editors add one. Anchors and aliases (`&a`, `*a`) are
refused before anything is built: nested aliases in 600 bytes expand to
billions of nodes (84 s and 1.2 GB for one `validate`, issue 12), and a
manifest reviewed in a pull request should say each value where it applies.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, NodeEvent

from iplosctl.errors import InputError, Location, Problem

#: Manifests are a few kilobytes; anything this big is not a manifest.
MAX_YAML_BYTES = 1_000_000


def _round_trip() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def read_text(path: Path, *, max_bytes: int = MAX_YAML_BYTES, what: str = "file") -> str:
    """Read a small text file as UTF-8 (BOM allowed) or raise InputError with a location."""
    name = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError([Problem(Location(name), f"{what} not found")]) from None
    except OSError as exc:
        raise InputError([Problem(Location(name), f"cannot read {what}: {exc.strerror}")]) from None
    if path.is_dir():
        raise InputError([Problem(Location(name), f"is a directory, expected a {what}")])
    if size > max_bytes:
        raise InputError(
            [
                Problem(
                    Location(name),
                    f"{what} is {size:,} bytes, over the {max_bytes:,} byte "
                    f"limit: is this really a {what}?",
                )
            ]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError([Problem(Location(name), f"cannot read {what}: {exc.strerror}")]) from None
    if b"\x00" in raw:
        line, col = _line_col(raw, raw.index(b"\x00"))
        raise InputError(
            [Problem(Location(name, line, col), f"binary data (NUL byte): not a YAML {what}")]
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        raise InputError(
            [
                Problem(
                    Location(name, line, col),
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}): save the {what} as UTF-8",
                )
            ]
        ) from None


def _line_col(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


def load(path: Path, *, what: str = "file") -> Any:
    """Load one YAML document with positions, or raise InputError naming line and column."""
    text = read_text(path, what=what)
    return loads(text, name=str(path), what=what)


def loads(text: str, *, name: str, what: str = "file") -> Any:
    """Parse YAML text; `name` is used in error locations."""
    if not text.strip():
        raise InputError([Problem(Location(name), f"{what} is empty")])
    try:
        _refuse_anchors(text, name=name, what=what)
        return _round_trip().load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = _describe_yaml_error(exc, text)
        raise InputError([Problem(Location(name, line, col), message)]) from None
    except YAMLError as exc:
        raise InputError([Problem(Location(name), f"invalid YAML: {exc}")]) from None


def _refuse_anchors(text: str, *, name: str, what: str) -> None:
    """InputError at the first anchor or alias; the event stream is linear in the text's size,
    so this runs before anything could be expanded. Text without `&` and `*` has neither,
    and skips the scan (a second parse: a third of loading a manifest)."""
    if "&" not in text and "*" not in text:
        return
    for event in _round_trip().parse(io.StringIO(text)):
        is_alias = isinstance(event, AliasEvent)
        if is_alias or (isinstance(event, NodeEvent) and event.anchor is not None):
            mark = event.start_mark
            kind = f"alias *{event.anchor}" if is_alias else f"anchor &{event.anchor}"
            raise InputError(
                [
                    Problem(
                        Location(name, mark.line + 1, mark.column + 1),
                        f"YAML anchors and aliases are not allowed in a {what} ({kind}): "
                        "write the value out where it is used",
                    )
                ]
            )


def _describe_yaml_error(exc: MarkedYAMLError, text: str) -> str:
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    mark = exc.problem_mark
    at_tab = mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t"
    if at_tab or "\\t" in problem or "\t" in problem:
        return "tab character: YAML indentation must use spaces"
    if "duplicate key" in problem:
        key = problem.split('"')[1] if '"' in problem else ""
        return f"duplicate key {key!r}: each key may appear once" if key else problem
    first = problem.splitlines()[0]
    return f"invalid YAML: {first}"


def dumps(data: Any) -> str:
    """Serialise with the project's one YAML configuration (comments kept)."""
    out = io.StringIO()
    _round_trip().dump(data, out)
    return out.getvalue()


def to_plain(node: Any) -> Any:
    """Turn ruamel's commented containers into plain JSON types for jsonschema.

    Dates become ISO strings: YAML reads `2024-01-15` as a date, JSON Schema
    expects a string with `format: date`.
    """
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, dt.datetime | dt.date):
        return node.isoformat()
    if node is None:
        return None
    return str(node)


@dataclass(frozen=True)
class Positions:
    """Where each key and item of a parsed document stands, without the ruamel tree.

    Keyed by the path of str keys and int indices, 1-based (line, column): what
    `position` finds walking the tree. Kept as JSON by `manifest.parsed_cache`.
    """

    at: dict[tuple[str | int, ...], tuple[int, int]]

    @classmethod
    def of(cls, root: Any) -> Positions:
        at: dict[tuple[str | int, ...], tuple[int, int]] = {}
        stack: list[tuple[tuple[str | int, ...], Any]] = [((), root)]
        while stack:
            path, node = stack.pop()
            if isinstance(node, CommentedMap):
                for key in node:
                    if isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
                        line, col = node.lc.key(key)
                        at[(*path, key)] = (line + 1, col + 1)
                        stack.append(((*path, key), node[key]))
            elif isinstance(node, CommentedSeq):
                for index, item in enumerate(node):
                    line, col = node.lc.item(index)
                    at[(*path, index)] = (line + 1, col + 1)
                    stack.append(((*path, index), item))
        return cls(at)

    def as_json(self) -> list[list[Any]]:
        return [[list(path), line, col] for path, (line, col) in self.at.items()]

    @classmethod
    def from_json(cls, rows: list[list[Any]]) -> Positions:
        return cls({tuple(path): (int(line), int(col)) for path, line, col in rows})


def position(root: Any, path: Sequence[str | int]) -> tuple[int, int]:
    """1-based line and column of the node at `path` (deepest known ancestor if absent).

    For a mapping key the key's own position is used, which is where a reader
    looks for both "unknown key" and "wrong value" problems.
    """
    if isinstance(root, Positions):
        best = (1, 1)
        for depth in range(1, len(path) + 1):
            found = root.at.get(tuple(path[:depth]))
            if found is None:
                break
            best = found
        return best
    node = root
    best = (1, 1)
    for part in path:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part)
                best = (line + 1, col + 1)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line, col = node.lc.item(part)
                best = (line + 1, col + 1)
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return best
