"""The mypyc build (setup.py): compiled when the build says so, never stale, and the same
plan as the interpreted `.py` files give.

`make test` sets IPLOSCTL_EXPECT_COMPILED=1 (0 with IPLOSCTL_PURE_PYTHON=1), so a build
that silently fell back to pure Python fails here instead of passing slowly. The rest of
the suite runs against whichever build is installed; the last test runs a plan with the
interpreted modules in a child process (`python -m iplosctl.compiled`) and compares it
with the installed build's, so both are checked by one `make test`.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iplosctl.compiled import COMPILED_MODULES, is_compiled
from iplosctl.sandbox.generate import generate_export

REPO = Path(__file__).resolve().parent.parent
TODAY = "2024-01-05"


@pytest.mark.skipif(
    os.environ.get("IPLOSCTL_EXPECT_COMPILED") != "1",
    reason="IPLOSCTL_EXPECT_COMPILED=1 is set by `make test`, whose install compiles",
)
def test_the_per_record_path_is_compiled_when_the_build_said_so() -> None:
    interpreted = [
        name for name, _path in COMPILED_MODULES if not is_compiled(importlib.import_module(name))
    ]
    assert interpreted == [], (
        f"{interpreted} run interpreted: the install did not compile them "
        "(see pip's output for `iplosctl: building pure Python`)"
    )


def test_no_compiled_module_is_older_than_its_source() -> None:
    """An in-place .so shadows its .py: an edit without a rebuild would test old code."""
    stale = []
    for name, path in COMPILED_MODULES:
        if is_compiled(importlib.import_module(name)):
            source = REPO / path
            # Not module.__file__: mypyc names it after its shared library's folder.
            (built,) = source.parent.glob(f"{source.stem}.*.so")
            if built.stat().st_mtime < source.stat().st_mtime:
                stale.append(path)
    assert stale == [], f"{stale} changed after the build: run `make .venv/.installed-dev`"


def _plan(tmp_path: Path, manifest: Path, *, interpreted: bool, cache: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / cache),  # cold: the records are really read
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    args = ["plan", "--format", "json", "--today", TODAY, str(manifest)]
    if interpreted:
        # Proves, inside the child, that every listed module came from its .py.
        code = (
            "import importlib, sys\n"
            "from iplosctl.compiled import COMPILED_MODULES, is_compiled, main, prefer_source\n"
            "prefer_source()\n"
            "compiled = [n for n, _ in COMPILED_MODULES "
            "if is_compiled(importlib.import_module(n))]\n"
            "assert not compiled, compiled\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from iplosctl.cli import main; sys.exit(main(sys.argv[1:]))",
            *args,
        ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert done.stdout.startswith("{"), (done.stdout[:3000], done.stderr[-3000:])
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def test_the_interpreted_fallback_plans_exactly_what_the_installed_build_plans(
    demo_copy: Path, tmp_path: Path
) -> None:
    # A generated export with test persons: rules, exclusions, summary and both parts.
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    generate_export(export, recipients=1500, seed=7, test_persons=3)
    installed = _plan(tmp_path, demo_copy, interpreted=False, cache="cache-installed")
    fallback = _plan(tmp_path, demo_copy, interpreted=True, cache="cache-interpreted")
    (a,), (b,) = installed["submissions"], fallback["submissions"]
    for key in ("action", "findings", "summary", "digests", "parts", "blocked"):
        assert a[key] == b[key], key
    assert a["summary"]["recipients"] != 0 and a["findings"]
