"""Fifty municipalities in one repository: one plan, one summary line, combined exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iplosctl.sandbox.generate import generate_export
from tests.conftest import DEMO_MANIFEST

COUNT = 50


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifests = tmp_path / "manifests"
    exports = tmp_path / "exports"
    manifests.mkdir()
    exports.mkdir()
    template = DEMO_MANIFEST.read_text()
    for i in range(COUNT):
        name = f"kommune-{i:02d}-2023"
        generate_export(exports / f"{name}.xml", recipients=12 + i, seed=i)
        text = template.replace("name: demo-2023", f"name: {name}").replace(
            "../examples/exports/demo-2023.xml", f"../exports/{name}.xml"
        )
        if i == 7:  # one municipality still on an obsolete housing code: blocked
            export = exports / f"{name}.xml"
            export.write_text(
                export.read_text().replace('<Service code="15">', '<Service code="13">', 1)
            )
        (manifests / f"{name}.yaml").write_text(text)
    return tmp_path


def test_plan_of_fifty(cli, repo: Path) -> None:
    result = cli("plan", "--format", "json", repo / "manifests")
    data = json.loads(result.out)
    assert len(data["submissions"]) == COUNT
    assert data["summary"] == "Plan: 49 to submit, 0 to correct, 1 blocked."
    assert result.code == 1  # any blocked → 1
    markdown = cli("plan", "--format", "markdown", repo / "manifests")
    assert len(markdown.out) < 60_000
    assert markdown.out.count("kommune-") >= 2 * COUNT
    only = cli("plan", "--detailed-exitcode", "--only", "kommune-1*", repo / "manifests")
    assert only.code == 2  # ten to submit, none blocked
    assert only.out.splitlines()[0] == "Plan: 10 to submit, 0 to correct, 0 blocked."
