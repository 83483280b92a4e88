"""Which modules mypyc compiles, whether they were, and how to run them interpreted anyway.

The per-record path of `plan` and `apply` (read a record, run the rules, count it
into the summary, format it for the payload digest) is compiled by mypyc from the
same source when `pip install` finds a C compiler (setup.py), and runs interpreted
otherwise. This module is the one list of those modules: setup.py reads it by
path, before iplosctl is importable, so it imports nothing but the standard
library.

`python -m iplosctl.compiled <iplosctl arguments>` runs the CLI with the
interpreted `.py` files even where the `.so` files are built: the benchmark's
"interpreted" figure and the test of the pure-Python fallback use it, so both
builds are checked from one install.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

#: (module, path from the repository root) of every module setup.py compiles
COMPILED_MODULES: tuple[tuple[str, str], ...] = (
    ("iplosctl.summary", "iplosctl/summary.py"),
    ("iplosctl.rules.engine", "iplosctl/rules/engine.py"),
    ("iplosctl.rules.kpr", "iplosctl/rules/kpr.py"),
    ("iplosctl.payload.export_writer", "iplosctl/payload/export_writer.py"),
    ("iplosctl_source_xml._reader", "plugins/iplosctl_source_xml/_reader.py"),
    ("iplosctl_source_xml._values", "plugins/iplosctl_source_xml/_values.py"),
)
#: the shared library mypyc puts the compiled code of all of them in (setup.py's group)
NATIVE_GROUP = "iplosctl._native"

_T = TypeVar("_T")

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:  # a runtime without mypy: the decorator only speaks to mypyc

        def mypyc_attr(*_args: Any, **_kwargs: Any) -> Callable[[_T], _T]:
            return lambda cls: cls


def is_compiled(module: ModuleType) -> bool:
    """True when `module` was loaded from a mypyc-built extension, not from its `.py`."""
    return (module.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


class _PreferSource(importlib.abc.MetaPathFinder):
    """Finds the `.py` of each compiled module, ignoring the `.so` beside it."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in {name for name, _path in COMPILED_MODULES}:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path or sys.path:
            source = Path(entry) / leaf
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def prefer_source() -> None:
    """From now on, import the compiled modules from their `.py` (before any is imported)."""
    loaded = [
        n for n, _path in COMPILED_MODULES if n in sys.modules and is_compiled(sys.modules[n])
    ]
    if loaded:
        raise RuntimeError(f"already imported compiled, too late to run interpreted: {loaded}")
    if not any(isinstance(f, _PreferSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _PreferSource())


def main(argv: list[str] | None = None) -> int:
    """`iplosctl` with the per-record path interpreted, whatever the build compiled."""
    prefer_source()
    from iplosctl.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
