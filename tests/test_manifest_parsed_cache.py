"""A manifest read back from the parsed cache says the same as one parsed anew.

The cache spares ruamel's round-trip parse of unchanged manifests (issue 15, the fleet's
unchanged re-plan); what it must not change is any data or any line:column a warning or
error points at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iplosctl import yamlio
from iplosctl.errors import ManifestError
from iplosctl.manifest import load_manifest
from iplosctl.manifest.parsed_cache import _cache_dir

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = [
    REPO / "manifests" / "demo-2023.yaml",
    REPO / "examples/fjordvik/manifests/fjordvik-2023.yaml",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_positions_agree_with_the_tree_for_every_key_and_below(path: Path) -> None:
    tree = yamlio.load(path)
    positions = yamlio.Positions.from_json(yamlio.Positions.of(tree).as_json())
    assert len(positions.at) > 20
    for key_path in positions.at:
        for probe in (key_path, (*key_path, "absent"), (*key_path, 99)):
            assert yamlio.position(positions, probe) == yamlio.position(tree, probe), probe
    assert yamlio.position(positions, ["nothing"]) == yamlio.position(tree, ["nothing"])


def _write_broken(tmp_path: Path) -> Path:
    manifest = tmp_path / "manifests" / "demo-2023.yaml"
    manifest.parent.mkdir()
    text = (REPO / "manifests" / "demo-2023.yaml").read_text(encoding="utf-8")
    text = text.replace("reportingYear: 2023", "reportingYear: 2023\n  surprise: true", 1)
    text = text.replace("kind: Submission", "kind: Submission\nextraTop: [1, 2]", 1)
    manifest.write_text(text, encoding="utf-8")
    return manifest


def test_a_broken_manifest_reports_the_same_lines_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _write_broken(tmp_path)
    with pytest.raises(ManifestError) as first:
        load_manifest(manifest)
    assert list(_cache_dir().glob("*.json")), "the parse was not kept"

    def no_parse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("parsed again although the text is unchanged")

    monkeypatch.setattr(yamlio, "loads", no_parse)
    with pytest.raises(ManifestError) as again:
        load_manifest(manifest)
    assert [str(p) for p in again.value.problems] == [str(p) for p in first.value.problems]
    assert any(":" in str(p.location) for p in first.value.problems)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_a_valid_manifest_from_the_cache_equals_the_parsed_one(path: Path) -> None:
    fresh = load_manifest(path)
    cached = load_manifest(path)
    assert not isinstance(fresh.node, yamlio.Positions)
    assert isinstance(cached.node, yamlio.Positions)
    assert cached == fresh  # every field but the tree
    for where in (("spec", "source", "path"), ("metadata", "name"), ("spec", "nothing")):
        assert cached.locate(*where) == fresh.locate(*where)
