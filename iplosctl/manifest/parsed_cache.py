"""A manifest's parsed form, kept between runs: its data and where each key stands.

ruamel's round-trip parser keeps the line and column of every node, which every warning
and error about a manifest points at, but it is pure Python: of re-planning 356
unchanged manifests (2.5 s) it took about 1.3 s. The data and the positions are a small
JSON document, so a run stores them under the digest of the manifest's text and the next
run with the same text reads them back instead of parsing: the same data (it came from
the same parse) and the same positions (`yamlio.position` reads either form).

Only what parsed into a mapping is stored; anything else is parsed, and reported, as
before. The key covers the text, iplosctl's and ruamel's versions and this format: a
change of any of them parses again. The folder is private to the user (0700), like the
plan cache beside it; a cache that cannot be written or read only costs time.
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
from iplosctl.private_files import private_dir

#: bump when what is stored changes shape
FORMAT = 1


@dataclass(frozen=True)
class Parsed:
    """A manifest's plain data and the positions `yamlio.position` needs."""

    data: Any
    #: the ruamel tree, or `yamlio.Positions` when read from the cache
    root: Any


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iplosctl" / "manifests"


def _key(text: str) -> str:
    salt = f"{FORMAT}\0{__version__}\0{ruamel.yaml.__version__}\0"
    return hashlib.sha256((salt + text).encode("utf-8")).hexdigest()


def parse_manifest_text(text: str, *, name: str) -> Parsed:
    """`text` parsed (or read back from the cache); InputError as `yamlio.loads` raises it."""
    key = _key(text)
    cached = _read(key)
    if cached is not None:
        return cached
    root = yamlio.loads(text, name=name, what="manifest")
    data = yamlio.to_plain(root)
    if isinstance(data, dict):
        positions = yamlio.Positions.of(root)
        with contextlib.suppress(OSError, ValueError):
            folder = private_dir(_cache_dir())
            stored = {"data": data, "positions": positions.as_json()}
            write_atomic(folder / f"{key}.json", json.dumps(stored).encode("utf-8"))
    return Parsed(data, root)


def _read(key: str) -> Parsed | None:
    try:
        stored = json.loads((_cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
        data, positions = stored["data"], yamlio.Positions.from_json(stored["positions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    return Parsed(data, positions)
