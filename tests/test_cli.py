"""Exit codes and the shape of errors, through the real entry point and a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iplosctl.manifest import manifest_schema
from tests.conftest import REPO


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("iplosctl")
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def test_console_script_validates_the_repository() -> None:
    proc = run("validate", "manifests/", "examples/")
    assert proc.returncode == 0, proc.stderr
    assert "demo-2023" in proc.stdout and "fjordvik-2023" in proc.stdout


def test_default_path_is_manifests() -> None:
    proc = run("validate")
    assert proc.returncode == 0, proc.stderr
    assert "manifests/demo-2023.yaml" in proc.stdout


def test_usage_error_is_64_not_2() -> None:
    proc = run("validate", "--no-such-option")
    assert proc.returncode == 64
    assert proc.stderr.startswith("usage error: ")
    assert "Traceback" not in proc.stderr


def test_no_manifests_found(tmp_path: Path) -> None:
    proc = run("validate", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: no manifests found in {tmp_path}"


def test_internal_error_is_3_with_a_log_without_input_data(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from iplosctl.cli import validate as cli_module

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("05903813050 Donald Duck")

    monkeypatch.setattr(cli_module, "validate_paths", explode)
    result = cli("validate", "manifests/")
    assert result.code == 3
    assert len(result.err.strip().splitlines()) == 1
    assert "05903813050" not in result.all
    log = Path(result.err.strip().rsplit(": ", 1)[1])
    text = log.read_text()
    assert "RuntimeError" in text and "iplosctl/cli/validate.py" in text
    assert "05903813050" not in text and "Donald" not in text


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("iplosctl ")


def test_schema_command_prints_the_shipped_schema(cli) -> None:
    result = cli("schema")
    assert json.loads(result.out) == manifest_schema()


def _properties(node: object, path: str = ""):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        for key, sub in node.get("properties", {}).items():
            yield f"{path}.{key}", sub
            yield from _properties(sub, f"{path}.{key}")
        for key, sub in node.get("$defs", {}).items():
            yield from _properties(sub, f"{path}$defs.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from _properties(node[key], f"{path}[]")


def test_every_manifest_field_is_documented() -> None:
    schema = manifest_schema()
    defs = schema["$defs"]
    undocumented = []
    for path, sub in _properties(schema):
        ref = sub.get("$ref", "")
        target = defs.get(ref.rsplit("/", 1)[-1], {}) if ref else {}
        if not sub.get("description") and not target.get("description"):
            undocumented.append(path)
    assert undocumented == []
