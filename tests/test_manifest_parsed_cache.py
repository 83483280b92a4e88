"""A manifest read back from the parsed cache says the same as one parsed anew.

The cache spares ruamel's round-trip parse of unchanged manifests (issue 15, the fleet's
unchanged re-plan); what it must not change is any data or any line:column a warning or
error points at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_a_broken_manifest_is_not_kept_and_reports_the_same_lines_each_time(
    tmp_path: Path,
) -> None:
    """Only what the schema accepts is cached: a misspelt key's value never reaches it."""
    manifest = _write_broken(tmp_path)
    with pytest.raises(ManifestError) as first:
        load_manifest(manifest, reuse_parsed=True)
    assert not list(_cache_dir().glob("*.json"))
    with pytest.raises(ManifestError) as again:
        load_manifest(manifest, reuse_parsed=True)
    assert [str(p) for p in again.value.problems] == [str(p) for p in first.value.problems]
    assert any(":" in str(p.location) for p in first.value.problems)


def test_an_unchanged_manifest_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "demo-2023.yaml"
    manifest.write_text((REPO / "manifests" / "demo-2023.yaml").read_text(encoding="utf-8"))
    first = load_manifest(manifest, reuse_parsed=True)
    whole = manifest.read_text(encoding="utf-8")
    real_loads = yamlio.loads

    def no_parse(text: str, **kwargs: Any) -> Any:
        """Only the test persons' own lines may be parsed again."""
        assert text != whole and "metadata" not in text, "parsed again although unchanged"
        return real_loads(text, **kwargs)

    monkeypatch.setattr(yamlio, "loads", no_parse)
    assert load_manifest(manifest, reuse_parsed=True) == first


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_a_valid_manifest_from_the_cache_equals_the_parsed_one(path: Path) -> None:
    fresh = load_manifest(path, reuse_parsed=True)
    cached = load_manifest(path, reuse_parsed=True)
    assert not isinstance(fresh.node, yamlio.Positions)
    assert isinstance(cached.node, yamlio.Positions)
    assert cached == fresh  # every field but the tree
    for where in (("spec", "source", "path"), ("metadata", "name"), ("spec", "nothing")):
        assert cached.locate(*where) == fresh.locate(*where)


def _cached_texts() -> str:
    return "".join(p.read_text(encoding="utf-8") for p in _cache_dir().glob("*.json"))


def _with_test_persons(tmp_path: Path, block: str) -> Path:
    """The demo manifest with its testPersons replaced by `block` (text at spec's indent)."""
    text = (REPO / "manifests" / "demo-2023.yaml").read_text(encoding="utf-8")
    old = '  testPersons:\n    names: ["Donald Duck", "Test Testesen"]\n'
    assert old in text
    manifest = tmp_path / "manifests" / "demo-2023.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(text.replace(old, block), encoding="utf-8")
    return manifest


BLOCKS = {
    "block": '  testPersons:\n    names: ["Kari Privatsen", "Ola Skjult"]\n',
    "nested-lists": "  testPersons:\n    names:\n      - Kari Privatsen\n"
    "  # a comment at spec's indent\n# and one at the margin\n      - Ola Skjult\n",
    "flow": '  testPersons: {names: ["Kari Privatsen", "Ola Skjult"]}\n',
    "last-in-spec": None,  # moved to the end of spec below
}


@pytest.mark.parametrize("layout", list(BLOCKS), ids=str)
def test_test_person_names_are_never_stored_and_come_back_from_the_manifest(
    tmp_path: Path, layout: str
) -> None:
    """The names stay in the manifest; a cache hit reads them from it, with their lines."""
    block = BLOCKS[layout]
    if block is None:
        manifest = _with_test_persons(tmp_path, "")
        text = manifest.read_text(encoding="utf-8")
        manifest.write_text(
            text.rstrip("\n") + '\n  testPersons:\n    names: ["Kari Privatsen", "Ola Skjult"]\n',
            encoding="utf-8",
        )
        assert yamlio.position(yamlio.load(manifest), ["spec", "testPersons"])[0] > 20
    else:
        manifest = _with_test_persons(tmp_path, block)
    fresh = load_manifest(manifest, reuse_parsed=True)
    assert fresh.test_persons.names == ("Kari Privatsen", "Ola Skjult")
    stored = _cached_texts()
    assert stored, "nothing was cached"
    for name in ("Kari", "Privatsen", "Ola Skjult"):
        assert name not in stored
    cached = load_manifest(manifest, reuse_parsed=True)
    assert isinstance(cached.node, yamlio.Positions)
    assert cached == fresh
    tree = yamlio.load(manifest)
    for where in (
        ("spec", "testPersons"),
        ("spec", "testPersons", "names", 1),
        ("spec", "endpoint"),
        ("spec", "testPersons", "ids"),
    ):
        assert yamlio.position(cached.node, where) == yamlio.position(tree, where), where


def test_a_manifest_naming_test_persons_elsewhere_is_not_cached(tmp_path: Path) -> None:
    """The schema lets a source plugin's options hold anything: no testPersons there either."""
    manifest = _with_test_persons(tmp_path, "")
    text = manifest.read_text(encoding="utf-8")
    source = "  source:\n"
    assert source in text
    options = '    options: {testPersons: {names: ["Kari Privatsen"]}}\n'
    manifest.write_text(text.replace(source, source + options, 1), encoding="utf-8")
    assert load_manifest(manifest, reuse_parsed=True).source.options["testPersons"]
    assert not list(_cache_dir().glob("*.json"))


def test_a_bad_test_person_id_is_never_kept(tmp_path: Path) -> None:
    manifest = _with_test_persons(tmp_path, "  testPersons:\n    ids:\n      - '123'\n")
    with pytest.raises(ManifestError) as raised:
        load_manifest(manifest, reuse_parsed=True)
    assert "spec.testPersons.ids[0]" in str(raised.value)
    assert not list(_cache_dir().glob("*.json"))


def test_only_commands_that_report_read_the_cache(tmp_path: Path) -> None:
    """Whatever sends parses the manifest itself: a cache someone else could write (a CI
    cache shared between branches) never decides where a message goes."""
    manifest = tmp_path / "demo-2023.yaml"
    manifest.write_text((REPO / "manifests" / "demo-2023.yaml").read_text(encoding="utf-8"))
    real = load_manifest(manifest)
    [stored] = _cache_dir().glob("*.json")  # a parse without reuse still fills the cache
    poisoned = json.loads(stored.read_text(encoding="utf-8"))
    poisoned["data"]["metadata"]["name"] = "planted-by-someone-else"
    stored.write_text(json.dumps(poisoned), encoding="utf-8")
    assert load_manifest(manifest, reuse_parsed=True).name == "planted-by-someone-else"
    assert load_manifest(manifest) == real
