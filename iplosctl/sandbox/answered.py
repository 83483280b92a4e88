"""sandbox.answered: the message ids the sandbox register has answered, kept between runs.

A resend of an answered message gets nothing (DOMAIN.md §5.8), also after a restart:
the embedded register lives only as long as one `apply` or `receipts`, so the ids are
kept in `register-seen.json` in its state folder. Without a folder they live in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from iplosctl.errors import IplosctlError

#: where answered message ids are kept between runs (inside the state folder)
SEEN_FILE = "register-seen.json"


class AnsweredIds:
    """A set of answered ids, written through to `path` (None: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._ids = self._load()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def add(self, ids: Iterable[str]) -> None:
        """Remember `ids`; the file is rewritten only when one of them is new."""
        new = [i for i in ids if i not in self._ids]
        if not new:
            return
        self._ids.update(new)
        if self.path is not None:
            self._save(self.path)

    def _load(self) -> set[str]:
        path = self.path
        if path is None or not path.exists():
            return set()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != 1:
                raise ValueError("unknown version")
            return {str(i) for i in data["ids"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IplosctlError(
                f"{path}: cannot read the sandbox register's answered-message list "
                f"({type(exc).__name__}); delete the file to start afresh"
            ) from None

    def _save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            json.dumps({"version": 1, "ids": sorted(self._ids)}, indent=0) + "\n",
            encoding="utf-8",
        )
        # temp file + replace: a ^C mid-write must not leave a half list behind
        os.replace(tmp, path)
