"""Compiles the per-record path with mypyc when it can; pyproject.toml holds the rest.

The modules listed in iplosctl/compiled.py (record reader, rules, summary, payload
writer) are compiled from their own source into one shared library
(`iplosctl/_native__mypyc*.so`) plus a small extension per module beside its
`.py`; Python then imports the `.so` in place of the `.py`. Nothing else changes:
there is no second implementation, and the same tests run against both.

Pure Python instead, with a line on stderr saying why, when any of these holds:
`IPLOSCTL_PURE_PYTHON=1`, mypyc is not importable (it ships with mypy, a build
requirement), there is no C compiler, or Python's headers are missing. An
editable install (`pip install -e .`, what the Makefile runs) builds the
extensions in place, next to the sources (a pure editable install removes
them again); `make clean` removes them. `make wheel` builds pure Python, so the
wheel the CI templates vendor stays `py3-none-any` and installs on any runner.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _why_not_compiled() -> str | None:
    if os.environ.get("IPLOSCTL_PURE_PYTHON") == "1":
        return "IPLOSCTL_PURE_PYTHON=1"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed (pip install 'mypy>=1.11')"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler} is not on PATH)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "Python's headers are missing (Python.h; e.g. apt-get install python3-dev)"
    return None


def _remove_in_place_extensions(compiled: dict[str, object]) -> None:
    """A pure build must not leave an earlier build's .so beside a .py: it would win."""
    modules: list[tuple[str, str]] = compiled["COMPILED_MODULES"]  # type: ignore[assignment]
    group = str(compiled["NATIVE_GROUP"]).replace(".", "/") + "__mypyc"
    for stem in [path.removesuffix(".py") for _module, path in modules] + [group]:
        for stale in ROOT.glob(f"{stem}.*.so"):
            stale.unlink()


def _in_place() -> bool:
    """An editable install or `build_ext --inplace`: the build that puts .so beside .py."""
    return bool({"editable_wheel", "develop", "--inplace"} & set(sys.argv))


def ext_modules() -> list[object]:
    compiled = runpy.run_path(str(ROOT / "iplosctl" / "compiled.py"))
    why = _why_not_compiled()
    if why is not None:
        print(f"iplosctl: building pure Python, not compiling with mypyc: {why}", file=sys.stderr)
        if _in_place():
            _remove_in_place_extensions(compiled)
        return []
    from mypyc.build import mypycify

    paths = [path for _module, path in compiled["COMPILED_MODULES"]]
    os.chdir(ROOT)  # mypyc takes paths relative to the project and writes build/ here
    return list(
        mypycify(
            # Imported modules that are not compiled are type-checked only as far as the
            # compiled ones use them; lxml ships no types, and the build environment has
            # none of the runtime dependencies. No config file: `make lint` runs the
            # project's mypy settings; the build only needs what mypyc needs.
            ["--config-file=", "--follow-imports=silent", "--ignore-missing-imports", *paths],
            group_name=compiled["NATIVE_GROUP"],
        )
    )


setup(ext_modules=ext_modules())
