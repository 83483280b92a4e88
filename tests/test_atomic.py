from __future__ import annotations

import os
from pathlib import Path

import pytest

from iplosctl.atomic import atomic_file, write_atomic


def test_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.bin"
    write_atomic(path, b"first")
    assert path.read_bytes() == b"first"
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write(b"half of the sec")
        raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "q.p7m"
    write_atomic(path, b"x", mode=0o600)
    assert os.stat(path).st_mode & 0o777 == 0o600
