from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lxml import etree

from iplosctl.errors import ProfileError
from iplosctl.formats import EXPORT_V1_NAMESPACE, EXPORT_V1_XSD, FORMATS_DIR
from iplosctl.formats.profile import (
    DEFAULT_FORMAT,
    available_formats,
    load_format,
    load_format_file,
    local_name,
)

V1 = FORMATS_DIR / "iplos-export-v1.yaml"
NS = f"{{{EXPORT_V1_NAMESPACE}}}"


def test_the_default_profile() -> None:
    profile = load_format()
    assert profile.name == DEFAULT_FORMAT == "iplos-export-v1"
    assert DEFAULT_FORMAT in available_formats()
    assert profile.schema_path == EXPORT_V1_XSD
    assert profile.root == f"{NS}IplosExport"
    assert profile.header.tag == f"{NS}Header" and profile.recipient.tag == f"{NS}Recipient"
    assert profile.max_depth == 8
    assert isinstance(profile.xml_schema(), etree.XMLSchema)
    assert load_format("iplos-export-v1") is profile  # compiled once


def test_single_steps_take_the_fast_path_and_the_rest_is_compiled() -> None:
    profile = load_format()
    own = {f.key: f for f in profile.recipient.fields}
    assert own["localId"].child == f"{NS}LocalId" and own["localId"].xpath is None
    assert own["localId"].target == "local_id" and own["rehabilitation"].kind == "boolean"
    header = {f.key: f for f in profile.header.fields}
    assert header["epjSystem"].child is None and header["epjSystem"].xpath is not None
    assert header["reportingYear"].kind == "year"
    service = {f.key: f for f in profile.services.fields}
    assert service["code"].attribute == "code"
    assert (service["from"].target, service["from"].kind) == ("start", "date")
    assert profile.services.tag == f"{NS}Service"
    assert profile.assessments is not None and profile.diagnoses is not None
    assert {f.key for f in profile.assessments.fields} == {"variable", "score", "date"}


def test_compiled_xpaths_return_plain_strings() -> None:
    header = {f.key: f for f in load_format().header.fields}
    doc = etree.fromstring(
        f'<Header xmlns="{EXPORT_V1_NAMESPACE}"><Epj><System>S</System></Epj></Header>'
    )
    xpath = header["epjSystem"].xpath
    assert xpath is not None
    (element,) = xpath(doc)
    assert element.text == "S"
    assert local_name(element.tag) == "System"


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"profile named 'v9' \(formats: .*iplos-export-v1"):
        load_format("v9")
    with pytest.raises(ProfileError, match="no export format profile"):
        load_format("../profiles/2023")


def profile_copy(tmp_path: Path, old: str = "", new: str = "", *, name: str = "custom") -> Path:
    shutil.copy(EXPORT_V1_XSD, tmp_path / EXPORT_V1_XSD.name)
    text = V1.read_text(encoding="utf-8").replace("name: iplos-export-v1", f"name: {name}")
    if old:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_copy_loads_from_any_folder(tmp_path: Path) -> None:
    profile = load_format_file(profile_copy(tmp_path, "localId: x:LocalId", "localId: x:*[1]"))
    own = {f.key: f for f in profile.recipient.fields}
    assert own["localId"].xpath is not None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("localId: x:LocalId", "localId: x:LocalId[", r"recipient\.fields\.localId: invalid XPath"),
        ("personId: x:PersonId", "personId: y:PersonId", r"recipient\.fields\.personId: .*prefix"),
        ("personId: x:PersonId", "personId: string(q:PersonId)", r"personId: invalid XPath"),
        ("root: x:IplosExport", "root: x:IplosExport/x:Header", r"root: .*an element name"),
        ("schema: iplos-export-v1.xsd", "schema: missing.xsd", r"schema: missing\.xsd not found"),
        ("maxDepth: 8", "maxDepth: 1", r"maxDepth"),
        ("    localId: x:LocalId\n", "", r"missing required key 'localId'"),
        ("    extractedAt:", "    extractedAtt:", r"unknown key 'extractedAtt' \(did you mean"),
        ("  services:", "  servces:", r"missing required key 'services'"),
        ("      hoursPerWeek:", "      hours:", r"unknown key 'hours'"),
        ("formatProfileVersion: 1", "formatProfileVersion: 2", r"must be 1"),
    ],
)
def test_broken_profiles_name_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = profile_copy(tmp_path, old, new)
    with pytest.raises(ProfileError, match=message) as info:
        load_format_file(path)
    assert info.value.message.startswith("broken format profile custom.yaml: ")


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    path = profile_copy(tmp_path)
    path.rename(tmp_path / "other.yaml")
    with pytest.raises(ProfileError, match="must match the file name"):
        load_format_file(tmp_path / "other.yaml")
