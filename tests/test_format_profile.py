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


# --- converters and joins (issue 11) ------------------------------------------------------

CONVERTING = """formatProfileVersion: 1
name: conv
schema: conv.xsd
namespaces: {c: "urn:conv"}
root: c:R
maxDepth: 4
header:
  element: c:H
  fields:
    municipality: "@k"
    reportingYear: "@y"
    epjSystem: "@s"
    epjVersion: "@v"
    extractedAt: FIELD_EXTRACTED
recipient:
  element: c:P
  fields:
    localId: "@id"
    personId: "@fnr"
    rehabilitation: FIELD_REHAB
  services:
    element: c:S
    JOIN
    fields:
      code: FIELD_CODE
      from: FIELD_FROM
      hoursPerWeek: FIELD_HOURS
"""
DEFAULTS = {
    "FIELD_EXTRACTED": "{path: '@t', patterns: ['%d.%m.%Y %H:%M']}",
    "FIELD_REHAB": "{path: '@r', trueValues: [J, Ja], falseValues: [N, Nei]}",
    "FIELD_CODE": "{path: '@c', trim: true, map: {HJS: '15', PB: '1'}}",
    "FIELD_FROM": "{path: '@f', patterns: ['%d.%m.%Y', '%Y-%m-%d'], emptyIsMissing: true}",
    "FIELD_HOURS": "{path: '@h', decimalSeparator: ','}",
    "JOIN": "",
}


def converting(tmp_path: Path, **changes: str) -> Path:
    text = CONVERTING
    for key, value in {**DEFAULTS, **changes}.items():
        text = text.replace(key, value)
    (tmp_path / "conv.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>', encoding="utf-8"
    )
    path = tmp_path / "conv.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def converter(profile: Path, owner: str, key: str):  # type: ignore[no-untyped-def]
    from iplosctl_source_xml._values import converter_for

    loaded = load_format_file(profile)
    emap = {"header": loaded.header, "recipient": loaded.recipient, "service": loaded.services}
    (field,) = [f for f in emap[owner].fields if f.key == key]
    return converter_for(field)


def test_conversions_read_norwegian_values(tmp_path: Path) -> None:
    import datetime as dt

    from iplosctl_source_xml._values import MISSING

    profile = converting(tmp_path)
    when = converter(profile, "header", "extractedAt")
    # Oslo is UTC+1 in winter and UTC+2 in summer: the zone database decides, not a constant
    assert when("03.01.2024 09:00") == dt.datetime(2024, 1, 3, 8, 0, tzinfo=dt.UTC)
    assert when("01.07.2023 10:00") == dt.datetime(2023, 7, 1, 8, 0, tzinfo=dt.UTC)
    # the hour that repeats when summer time ends takes its first (summer) offset
    assert when("29.10.2023 02:30") == dt.datetime(2023, 10, 29, 0, 30, tzinfo=dt.UTC)
    rehab = converter(profile, "recipient", "rehabilitation")
    assert (rehab("J"), rehab("Ja"), rehab("N"), rehab("Nei")) == (True, True, False, False)
    code = converter(profile, "service", "code")
    assert (code(" HJS "), code("PB")) == ("15", "1")
    start = converter(profile, "service", "from")
    assert start("31.12.2023") == start("2023-12-31") == dt.date(2023, 12, 31)
    assert start("") is MISSING and start("  ") is MISSING
    hours = converter(profile, "service", "hoursPerWeek")
    assert (hours("3,5"), hours("12")) == (3.5, 12.0)


@pytest.mark.parametrize(
    ("owner", "key", "text", "reason"),
    [
        ("recipient", "rehabilitation", "Yes", "none of the field's trueValues"),
        ("service", "code", "HJEMME", "not listed in the field's map"),
        ("service", "from", "2023/12/31", "matches none of the patterns %d.%m.%Y, %Y-%m-%d"),
        ("service", "hoursPerWeek", "1.234,5", "has a '.'"),
        ("header", "extractedAt", "03.01.2024", "matches none of the patterns"),
    ],
)
def test_a_value_a_conversion_cannot_read_says_why_without_the_value(
    tmp_path: Path, owner: str, key: str, text: str, reason: str
) -> None:
    from iplosctl_source_xml._values import Unreadable

    with pytest.raises(Unreadable) as info:
        converter(converting(tmp_path), owner, key)(text)
    assert reason in str(info.value) and text not in str(info.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"FIELD_FROM": "{path: '@f', patterns: ['%d.%m']}"},
            "must contain the day, month and year",
        ),
        ({"FIELD_EXTRACTED": "{path: '@t', patterns: ['%d.%m.%Y']}"}, "hour and minute"),
        ({"FIELD_EXTRACTED": "{path: '@t', timezone: Europe/Oslooo}"}, "not an IANA time zone"),
        ({"FIELD_CODE": "{path: '@c', decimalSeparator: ','}"}, "applies to decimal fields"),
        ({"FIELD_REHAB": "{path: '@r', trueValues: [J]}"}, "trueValues and falseValues go"),
        ({"FIELD_REHAB": "{path: '@r', trueValues: [J], falseValues: [J]}"}, "both true and"),
        ({"FIELD_HOURS": "{path: '@h', decimalSeparator: ';'}"}, "decimalSeparator"),
        ({"FIELD_CODE": "{path: 'z:c'}"}, "prefix 'z' is not declared"),
        (
            {"JOIN": "join: {key: '@p', references: rehabilitation}"},
            "'rehabilitation' is not a text field of recipient.fields",
        ),
        ({"JOIN": "join: {key: '@p', references: nobody}"}, "'nobody' is not a text field"),
        ({"JOIN": "join: {key: '@p[[', references: localId}"}, "join.key: invalid XPath"),
    ],
)
def test_a_broken_conversion_or_join_is_a_profile_error_naming_the_key(
    tmp_path: Path, changes: dict[str, str], expected: str
) -> None:
    with pytest.raises(ProfileError) as info:
        load_format_file(converting(tmp_path, **changes))
    assert info.value.message.startswith("broken format profile conv.yaml: ")
    assert expected in info.value.message


def test_a_join_makes_the_item_a_streamed_tag(tmp_path: Path) -> None:
    profile = load_format_file(converting(tmp_path, JOIN="join: {key: '@p', references: localId}"))
    assert profile.joined and profile.services.tag == "{urn:conv}S"
    assert profile.services.join is not None
    assert (profile.services.join.target, profile.services.join.key.attribute) == ("local_id", "p")
    assert not load_format().joined
