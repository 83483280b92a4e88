"""The sandbox sits at the edge: the core never imports `iplosctl.sandbox` (issue 15, item 4).

`endpoint.connect` once imported the embedded register while `sandbox/embedded.py`
imported `endpoint`: a cycle through the middle of the import graph. The register is now
an entry point (`iplosctl.registers`), looked up like a transport. Two checks keep it so:
importing the core in a fresh interpreter loads no sandbox module, and no core source
file names `iplosctl.sandbox` in an import statement.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from iplosctl import plugins

PACKAGE = Path(plugins.__file__).resolve().parent
#: modules that run a submission: importing any of them must not load the sandbox
CORE = ("iplosctl.endpoint", "iplosctl.plan", "iplosctl.apply", "iplosctl.receipts")
#: where importing the sandbox is the job: the simulator itself, the command line that
#: starts it, the plugin test kit (synthetic recipients), the support bundle (test PKI)
EDGE = ("sandbox", "cli", "testing", "support_bundle")


def test_importing_the_core_loads_no_sandbox_module() -> None:
    code = (
        "import sys\n"
        f"for name in {CORE!r}:\n"
        "    __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('iplosctl.sandbox')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def _imports(path: Path) -> set[str]:
    """Every module an import statement in `path` names, function-local ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _core_files() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in EDGE
    ]


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_core_module_imports_the_sandbox(path: Path) -> None:
    offending = sorted(
        name
        for name in _imports(path)
        if name == "iplosctl.sandbox" or name.startswith("iplosctl.sandbox.")
    )
    assert offending == [], f"{path.relative_to(PACKAGE)} imports {offending}"


def test_the_sandbox_register_is_an_entry_point_the_pin_cannot_unplug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`IPLOSCTL_LOAD_PLUGINS=xml,amqp` must not break `environment: sandbox`."""
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "xml,amqp")
    from iplosctl.endpoint import SANDBOX_REGISTER
    from iplosctl.sandbox.embedded import embedded_register

    assert plugins.load("register", SANDBOX_REGISTER) is embedded_register
