"""The example manifests' `$schema` lines work where the README says to put a manifest
(issue 13, item 12: "the example's `$schema` path breaks when copied").

The convention (README, "Editors"): a manifest in `<repository>/manifests/` names
`../manifest.schema.json`, the file `iplosctl schema > manifest.schema.json` writes at
the repository's root. `examples/fjordvik/` is laid out as such a repository and ships
that file, so its manifest works in place and when copied. Checked without an editor:
the reference is resolved as yaml-language-server does (relative to the manifest's
folder), the file must exist, be the schema `iplosctl schema` prints, and the manifest
must validate against it with jsonschema.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from iplosctl.manifest import manifest_schema
from tests.conftest import REPO

MODELINE = "# yaml-language-server: $schema="
EXAMPLES = sorted((REPO / "examples").glob("**/manifests/*.yaml"))


def _reference(manifest: Path) -> str:
    first = manifest.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE), f"{manifest}: no $schema line"
    return first.removeprefix(MODELINE).strip()


def _check_resolves_and_validates(manifest: Path) -> None:
    reference = _reference(manifest)
    assert "://" not in reference, reference  # a path, as the README's layout has it
    schema_file = (manifest.parent / reference).resolve()
    assert schema_file.is_file(), f"{manifest}: $schema {reference} → {schema_file} is missing"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    assert schema == manifest_schema()  # what `iplosctl schema` prints, not a stale copy
    data = YAML(typ="safe").load(manifest.read_text(encoding="utf-8"))
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(data)]
    assert errors == [], f"{manifest}: {errors}"


def test_there_are_example_manifests() -> None:
    assert EXAMPLES, "examples/**/manifests/*.yaml"


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda p: p.name)
def test_an_example_manifest_resolves_its_schema_in_place(manifest: Path) -> None:
    assert _reference(manifest) == "../manifest.schema.json"
    _check_resolves_and_validates(manifest)


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda p: p.name)
def test_a_copied_example_resolves_its_schema_in_a_new_repository(
    manifest: Path, tmp_path: Path
) -> None:
    """A new repository: `iplosctl schema > manifest.schema.json` at its root (the
    README's step), the example copied into its `manifests/` folder."""
    repo = tmp_path / "kommune-iplos"
    (repo / "manifests").mkdir(parents=True)
    exe = Path(sys.executable).with_name("iplosctl")
    printed = subprocess.run(
        [str(exe), "schema"], cwd=repo, capture_output=True, text=True, check=True
    )
    (repo / "manifest.schema.json").write_text(printed.stdout, encoding="utf-8")
    copy = repo / "manifests" / manifest.name
    shutil.copy(manifest, copy)
    _check_resolves_and_validates(copy)


def test_the_shipped_example_schema_is_what_iplosctl_schema_prints() -> None:
    shipped = REPO / "examples" / "fjordvik" / "manifest.schema.json"
    exe = Path(sys.executable).with_name("iplosctl")
    printed = subprocess.run([str(exe), "schema"], capture_output=True, text=True, check=True)
    assert shipped.read_text(encoding="utf-8") == printed.stdout, (
        "regenerate: iplosctl schema > examples/fjordvik/manifest.schema.json"
    )


def test_the_readme_states_the_convention() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "iplosctl schema > manifest.schema.json" in readme
    assert "$schema=../manifest.schema.json" in readme
