from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from iplosctl.errors import SourceError
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.formats import profile as format_profile
from iplosctl.payload.export_writer import write_export
from iplosctl.plugins import Export, SourceSpec
from iplosctl.records import Recipient
from iplosctl.sandbox.generate import generate_export
from iplosctl_source_xml import XmlSource

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "exports" / "demo-2023.xml"
NS = "urn:iplosctl:export:v1"
PERSON = "05903813050"  # Test-Norge, used as the planted identifier in bad inputs
HEADER = (
    "<Header><Municipality>9999</Municipality><ReportingYear>2023</ReportingYear>"
    "<Epj><System>DemoEPJ</System><Version>4.2.0</Version></Epj></Header>"
)


def export(body: str = "", *, header: str = HEADER, root: str = f'xmlns="{NS}" version="1"') -> str:
    declaration = '<?xml version="1.0" encoding="UTF-8"?>'
    return f"{declaration}\n<IplosExport {root}>\n{header}\n{body}</IplosExport>\n"


def recipient(inner: str = "") -> str:
    return f"<Recipient><LocalId>r-1</LocalId><PersonId>{PERSON}</PersonId>{inner}</Recipient>\n"


def read_all(path: Path, fmt: str | None = None) -> tuple[Export, list[Recipient]]:
    result = XmlSource().read(SourceSpec(path, fmt))
    return result, list(result.recipients)


def assert_one_clean_problem(exc: SourceError, path: Path, *, names: tuple[str, ...] = ()) -> str:
    """Exactly one problem, at the file and a line, echoing no id or name from the input."""
    assert len(exc.problems) == 1, exc.lines()
    problem = exc.problems[0]
    assert problem.location.file == str(path)
    assert problem.location.line >= 1
    text = str(problem)
    assert not re.search(r"\d{11}", text), text
    for name in names:
        assert name not in text, text
    assert "\n" not in text
    return problem.message


# --- reading ---------------------------------------------------------------------------


def test_reads_the_demo_export() -> None:
    result, records = read_all(DEMO)
    assert result.header.municipality == "9999"
    assert result.header.reporting_year == 2023
    assert (result.header.epj_system, result.header.epj_version) == ("DemoEPJ", "4.2.0")
    assert result.header.extracted_at == dt.datetime(2024, 1, 3, 8, 0, tzinfo=dt.UTC)
    assert len(records) == 40
    assert [r.index for r in records] == list(range(40))
    assert records[0].local_id == "r-000001" and records[0].line == 9
    assert sum(r.name == "Donald Duck" for r in records) == 2
    assert all(len(r.person_id) == 11 for r in records)
    assert all(r.services for r in records)


def test_every_field_of_the_format(tmp_path: Path) -> None:
    body = recipient(
        "<Name>Test Testesen</Name><District>030101</District><Housing>H1</Housing>"
        "<Rehabilitation>1</Rehabilitation>\n"
        '<Service code="15"><From>2023-01-02</From><To>2023-12-30+01:00</To>'
        "<HoursPerWeek>3.25</HoursPerWeek><DecisionDate>2022-12-20</DecisionDate>"
        "<OrgNumber>310000027</OrgNumber></Service>\n"
        '<Service code="29"/>\n'
        '<Assessment variable="4" score="9" date="2023-03-01"/>'
        '<Assessment variable="5" score="2"/>'
        '<Diagnosis code="F03" system="ICD-10"/>'
    )
    path = tmp_path / "e.xml"
    path.write_text(export(body), encoding="utf-8")
    _, (r,) = read_all(path)
    assert (r.local_id, r.person_id, r.name) == ("r-1", PERSON, "Test Testesen")
    assert (r.district, r.housing, r.rehabilitation, r.line) == ("030101", "H1", True, 4)
    first, second = r.services
    assert first.code == "15" and first.line == 5
    assert (first.start, first.end) == (dt.date(2023, 1, 2), dt.date(2023, 12, 30))
    assert first.hours_per_week == 3.25 and first.decision_date == dt.date(2022, 12, 20)
    assert first.org_number == "310000027"
    assert (second.code, second.start, second.org_number) == ("29", None, None)
    assert [(a.variable, a.score, a.date) for a in r.assessments] == [
        ("4", 9, dt.date(2023, 3, 1)),
        ("5", 2, None),
    ]
    assert r.diagnoses == ("F03",)


def test_a_recipient_without_person_id_reads_as_empty(tmp_path: Path) -> None:
    """The KPR_IPL part carries none; the person-id rule, not the reader, objects."""
    path = tmp_path / "ipl.xml"
    path.write_text(export("<Recipient><LocalId>r-1</LocalId></Recipient>\n"), encoding="utf-8")
    _, (r,) = read_all(path)
    assert r.person_id == "" and r.services == ()


def test_an_export_without_recipients(tmp_path: Path) -> None:
    path = tmp_path / "none.xml"
    path.write_text(export(), encoding="utf-8")
    result, records = read_all(path)
    assert result.header.municipality == "9999" and records == []


def test_round_trip_generate_read_write(tmp_path: Path) -> None:
    """generate → read → write gives the same bytes, and reading them gives equal records."""
    path = tmp_path / "gen.xml"
    generate_export(path, recipients=300, seed=7, test_persons=3)
    result, records = read_all(path)
    out = io.BytesIO()
    write_export(result.header, records, out, include_names=True)
    assert out.getvalue() == path.read_bytes()
    again = tmp_path / "again.xml"
    again.write_bytes(out.getvalue())
    result2, records2 = read_all(again)
    assert result2.header == result.header
    assert records2 == records


def test_header_is_read_before_recipients_are_iterated(tmp_path: Path) -> None:
    path = tmp_path / "gen.xml"
    generate_export(path, recipients=5, seed=1)
    result = XmlSource().read(SourceSpec(path))
    assert result.header.reporting_year == 2023
    assert next(result.recipients).index == 0


def test_unknown_options_and_formats_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"takes no options.*spec.source.options.colums"):
        XmlSource().read(SourceSpec(DEMO, None, {"colums": {}}))
    with pytest.raises(SourceError, match=r"no export format profile named 'nope'"):
        XmlSource().read(SourceSpec(DEMO, "nope"))
    with pytest.raises(SourceError, match="export file not found"):
        XmlSource().read(SourceSpec(tmp_path / "missing.xml"))


# --- the bad-input corpus ----------------------------------------------------------------

GOOD = export(recipient())
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    ' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
    ' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n]>\n'
    f'<IplosExport xmlns="{NS}" version="1">&lol3;</IplosExport>\n'
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    + export(recipient("<Name>&x;</Name>")).split("\n", 1)[1]
)
DEEP = export(
    recipient(
        "".join(f"<x{i}>" for i in range(10)) + "".join(f"</x{i}>" for i in reversed(range(10)))
    )
)

CORPUS: dict[str, tuple[bytes, str]] = {
    "truncated": (GOOD.encode()[: GOOD.index(PERSON) + 6], "truncated"),
    "truncated-in-a-tag": (GOOD.encode()[: GOOD.index("</PersonId>") + 5], "truncated"),
    "billion-laughs": (BILLION_LAUGHS.encode(), "DOCTYPE"),
    "external-entity": (EXTERNAL_ENTITY.encode(), "DOCTYPE"),
    "any-doctype": (b"<!DOCTYPE IplosExport>\n" + GOOD.split("\n", 1)[1].encode(), "DOCTYPE"),
    "doctype-after-comment": (
        b'<?xml version="1.0"?>\n<!-- EPJ -->\n<!DOCTYPE x SYSTEM "http://x.invalid/x.dtd">\n'
        + GOOD.split("\n", 1)[1].encode(),
        "DOCTYPE",
    ),
    "utf16-doctype": (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x><x/>'.encode("utf-16"),
        "DOCTYPE",
    ),
    "wrong-namespace": (
        export(recipient(), root='xmlns="urn:iplos:other" version="1"').encode(),
        "namespace 'urn:iplos:other'",
    ),
    "no-namespace": (export(recipient(), root='version="1"').encode(), "without a namespace"),
    "windows-1252-declared-utf8": (
        export(recipient("<Name>Bjørn Ås</Name>")).encode("cp1252"),
        "not valid UTF-8",
    ),
    "ten-levels-deep": (DEEP.encode(), "nested more than 8 levels"),
    "ten-levels-of-nonsense": (
        ("<a>" * 10 + f"Donald Duck {PERSON}" + "</a>" * 10).encode(),
        "root element is <a>",
    ),
    "empty-file": (b"", "empty"),
    "only-whitespace": (b" \n\n  \n", "empty"),
    "not-xml": (f"localId;personId\nr-1;{PERSON}\n".encode(), "not XML"),
    "person-id-pattern": (GOOD.replace(PERSON, PERSON[:-1]).encode(), "<PersonId>"),
    "bad-date": (
        export(recipient('<Service code="1"><From>2023-02-30</From></Service>')).encode(),
        "<From>",
    ),
    "bad-hours": (
        export(recipient('<Service code="1"><HoursPerWeek>-2</HoursPerWeek></Service>')).encode(),
        "<HoursPerWeek>",
    ),
    "unknown-element-with-text": (
        export(recipient("<Navn>Donald Duck</Navn>")).encode(),
        "<Navn>: This element is not expected",
    ),
    "content-after-the-end": (GOOD.encode() + b"<IplosExport/>\n", "after the end"),
    "undefined-entity": (GOOD.replace("r-1", "r-1 &DonaldDuck;").encode(), "undefined entity"),
    "control-character": (GOOD.replace("r-1", "r-\x01").encode(), "control character"),
    "missing-header": (export(recipient(), header="").encode(), "Expected is ( <Header> )"),
    "missing-local-id": (
        export(f"<Recipient><PersonId>{PERSON}</PersonId></Recipient>\n").encode(),
        "has no localId",
    ),
    "name-too-long": (
        export(recipient(f"<Name>{'Donald Duck ' * 20}</Name>")).encode(),
        "too long",
    ),
    "wrong-version": (export(recipient(), root=f'xmlns="{NS}" version="2"').encode(), "'version'"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_gives_one_located_privacy_safe_error(case: str, tmp_path: Path) -> None:
    data, expected = CORPUS[case]
    path = tmp_path / f"{case}.xml"
    path.write_bytes(data)
    with pytest.raises(SourceError) as info:
        read_all(path)
    message = assert_one_clean_problem(
        info.value, path, names=("Donald", "Duck", "Bjørn", "root:", "/bin/")
    )
    assert expected in message


def test_truncation_is_found_in_a_large_export(tmp_path: Path) -> None:
    """lxml's streaming validation can swallow the error; the reader must not."""
    full = tmp_path / "full.xml"
    generate_export(full, recipients=2000, seed=3)
    data = full.read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = XmlSource().read(SourceSpec(cut))
    seen = 0
    with pytest.raises(SourceError) as info:
        for _ in result.recipients:
            seen += 1
    assert 0 < seen < 2000
    message = assert_one_clean_problem(info.value, cut)
    assert "truncated" in message
    assert info.value.problems[0].location.line == data[: len(data) * 2 // 3].count(b"\n") + 1


def test_a_schema_error_deep_in_the_file_names_its_line(tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    generate_export(good, recipients=1000, seed=4)
    lines = good.read_text(encoding="utf-8").splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if i > 3000 and "<OrgNumber>" in line)
    lines[target] = re.sub(
        r"<OrgNumber>(\d+)</OrgNumber>", r"<OrgNumber>\g<1>0</OrgNumber>", lines[target]
    )
    bad = tmp_path / "bad.xml"
    bad.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(SourceError) as info:
        read_all(bad)
    message = assert_one_clean_problem(info.value, bad)
    assert "<OrgNumber>" in message
    assert info.value.problems[0].location.line == target + 1


# --- another format is another profile --------------------------------------------------

LEGACY_XSD = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:example:legacy"
           xmlns="urn:example:legacy" elementFormDefault="qualified">
  <xs:element name="Uttrekk"><xs:complexType><xs:sequence>
    <xs:element name="Hode"><xs:complexType><xs:sequence>
      <xs:element name="System"><xs:complexType>
        <xs:attribute name="navn" type="xs:string"/><xs:attribute name="versjon" type="xs:string"/>
      </xs:complexType></xs:element>
    </xs:sequence>
    <xs:attribute name="kommune" type="xs:string"/><xs:attribute name="aar" type="xs:gYear"/>
    </xs:complexType></xs:element>
    <xs:element name="Mottaker" minOccurs="0" maxOccurs="unbounded"><xs:complexType><xs:sequence>
      <xs:element name="Fnr" type="xs:string"/>
      <xs:element name="Tjenester"><xs:complexType><xs:sequence>
        <xs:element name="Tjeneste" minOccurs="0" maxOccurs="unbounded"><xs:complexType>
          <xs:attribute name="kode" type="xs:string"/><xs:attribute name="fra" type="xs:date"/>
          <xs:attribute name="timer" type="xs:decimal"/>
        </xs:complexType></xs:element>
      </xs:sequence></xs:complexType></xs:element>
    </xs:sequence><xs:attribute name="id" type="xs:string"/></xs:complexType></xs:element>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>
"""
LEGACY_PROFILE = """formatProfileVersion: 1
name: legacy-v0
schema: legacy-v0.xsd
namespaces: {l: "urn:example:legacy"}
root: l:Uttrekk
maxDepth: 6
header:
  element: l:Hode
  fields:
    municipality: "@kommune"
    reportingYear: "@aar"
    epjSystem: l:System/@navn
    epjVersion: string(l:System/@versjon)
recipient:
  element: l:Mottaker
  fields:
    localId: "@id"
    personId: l:Fnr
  services:
    element: l:Tjenester/l:Tjeneste
    fields: {code: "@kode", from: "@fra", hoursPerWeek: "@timer"}
"""
LEGACY_EXPORT = f"""<?xml version="1.0"?>
<Uttrekk xmlns="urn:example:legacy">
  <Hode kommune="9999" aar="2023"><System navn="GammelEPJ" versjon="1.0"/></Hode>
  <Mottaker id="a-1"><Fnr>{PERSON}</Fnr>
    <Tjenester><Tjeneste kode="15" fra="2023-01-01" timer="2.5"/><Tjeneste kode="6"/></Tjenester>
  </Mottaker>
</Uttrekk>
"""


def test_another_format_needs_only_a_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    formats = tmp_path / "formats"
    formats.mkdir()
    (formats / "legacy-v0.xsd").write_text(LEGACY_XSD, encoding="utf-8")
    (formats / "legacy-v0.yaml").write_text(LEGACY_PROFILE, encoding="utf-8")
    monkeypatch.setattr(format_profile, "FORMATS_DIR", formats)
    path = tmp_path / "legacy.xml"
    path.write_text(LEGACY_EXPORT, encoding="utf-8")
    result, (r,) = read_all(path, "legacy-v0")
    assert (result.header.municipality, result.header.reporting_year) == ("9999", 2023)
    assert (result.header.epj_system, result.header.epj_version) == ("GammelEPJ", "1.0")
    assert (r.local_id, r.person_id, r.line) == ("a-1", PERSON, 4)
    assert [(s.code, s.start, s.hours_per_week) for s in r.services] == [
        ("15", dt.date(2023, 1, 1), 2.5),
        ("6", None, None),
    ]
    # and the v1 reader refuses it by its root element
    monkeypatch.undo()
    with pytest.raises(SourceError, match=r"is spec\.source\.format right"):
        read_all(path)


# --- streaming -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.xml"
    generate_export(path, recipients=20_000, seed=11)
    return path


def test_streaming_keeps_python_memory_flat(large_export: Path) -> None:
    """Records are handed out one at a time; reading 20k must not hold them (tracemalloc)."""
    tracemalloc.start()
    try:
        result = XmlSource().read(SourceSpec(large_export))
        count = sum(1 for _ in result.recipients)
        _, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        kept = list(XmlSource().read(SourceSpec(large_export)).recipients)
        _, keeping_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(kept) == 20_000
    assert streaming_peak < 2_000_000
    assert streaming_peak * 10 < keeping_peak


RSS_PROBE = """
import resource, sys
from pathlib import Path
from iplosctl.plugins import SourceSpec
from iplosctl_source_xml import XmlSource
result = XmlSource().read(SourceSpec(Path(sys.argv[1])))
count = sum(1 for _ in result.recipients)
print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streaming_keeps_the_parsed_tree_small(large_export: Path, tmp_path: Path) -> None:
    """libxml2's tree is invisible to tracemalloc: compare peak RSS for 1k and 20k recipients."""
    small = tmp_path / "small.xml"
    generate_export(small, recipients=1000, seed=11)

    def peak_kb(path: Path) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])

    (n_small, rss_small), (n_large, rss_large) = peak_kb(small), peak_kb(large_export)
    assert (n_small, n_large) == (1000, 20_000)
    # Holding the whole tree of 20k recipients costs over 100 MB; streaming costs ~nothing.
    assert rss_large - rss_small < 20_000


def test_the_xsd_is_the_one_shipped() -> None:
    assert format_profile.load_format().schema_path == EXPORT_V1_XSD
