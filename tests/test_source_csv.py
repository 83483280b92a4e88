from __future__ import annotations

import datetime as dt
import io
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iplosctl.errors import SourceError
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.payload.export_writer import write_export
from iplosctl.plugins import Export, SourceSpec
from iplosctl.records import Recipient
from iplosctl.sandbox.generate import synthetic_recipients
from iplosctl_source_csv import CsvSource

PERSON = "05903813050"
OTHER = "41900112345"
HEADER_OPTIONS: dict[str, Any] = {
    "municipality": "9999",
    "reportingYear": 2023,
    "epjSystem": "DemoEPJ",
    "epjVersion": "4.2.0",
}
COLUMNS = "localId;personId;name;code;from;to;hoursPerWeek;orgNumber;rehabilitation"
ROWS = [
    f"r-1;{PERSON};Donald Duck;15;2023-01-02;;3,5;310000027;ja",
    f"r-1;{PERSON};;6;2023-02-01;2023-12-31;;;",
    f"r-2;{OTHER};;21;2022-05-10;;;310000035;nei",
]


def csv_file(tmp_path: Path, rows: list[str], header: str = COLUMNS, **kw: Any) -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(kw.get("encoding", "utf-8")))
    return path


def read_all(path: Path, **options: Any) -> tuple[Export, list[Recipient]]:
    result = CsvSource().read(SourceSpec(path, None, HEADER_OPTIONS | options))
    return result, list(result.recipients)


def test_rows_of_one_local_id_become_one_recipient(tmp_path: Path) -> None:
    result, records = read_all(csv_file(tmp_path, ROWS))
    assert result.header.municipality == "9999" and result.header.reporting_year == 2023
    assert result.header.extracted_at is None
    first, second = records
    assert (first.index, first.local_id, first.person_id, first.line) == (0, "r-1", PERSON, 2)
    assert first.name == "Donald Duck" and first.rehabilitation is True
    assert [(s.code, s.line) for s in first.services] == [("15", 2), ("6", 3)]
    home_care, alarm = first.services
    assert home_care.start == dt.date(2023, 1, 2) and home_care.hours_per_week == 3.5
    assert home_care.org_number == "310000027" and home_care.end is None
    assert alarm.end == dt.date(2023, 12, 31) and alarm.org_number is None
    assert (second.index, second.line, second.rehabilitation) == (1, 4, False)
    assert second.services[0].start == dt.date(2022, 5, 10)


def test_mapping_delimiter_encoding_and_date_format(tmp_path: Path) -> None:
    header = "Journalnr,Fødselsnummer,Navn,Tjeneste,Fra,Timer"
    rows = [f'J1,{PERSON},"Bjørn Ås",15,02.01.2023,"7,25"', f"J2,{OTHER},,29,01.03.2023,"]
    path = csv_file(tmp_path, rows, header, encoding="cp1252")
    result, records = read_all(
        path,
        delimiter=",",
        encoding="windows-1252",
        dateFormat="%d.%m.%Y",
        extractedAt="2024-01-03T08:00:00Z",
        columns={
            "localId": "Journalnr",
            "personId": "Fødselsnummer",
            "name": "Navn",
            "code": "Tjeneste",
            "from": "Fra",
            "hoursPerWeek": "Timer",
        },
    )
    assert result.header.extracted_at == dt.datetime(2024, 1, 3, 8, 0, tzinfo=dt.UTC)
    assert [r.local_id for r in records] == ["J1", "J2"]
    assert records[0].name == "Bjørn Ås"
    assert records[0].services[0].start == dt.date(2023, 1, 2)
    assert records[0].services[0].hours_per_week == 7.25
    assert records[1].services[0].hours_per_week is None


def test_a_utf8_bom_and_blank_lines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + "\n".join([COLUMNS, ROWS[0], "", ROWS[2]]) + "\n").encode())
    _, records = read_all(path)
    assert [r.local_id for r in records] == ["r-1", "r-2"]
    assert records[1].line == 4


def test_records_make_a_valid_payload(tmp_path: Path) -> None:
    result, records = read_all(csv_file(tmp_path, ROWS))
    out = io.BytesIO()
    write_export(result.header, records, out)
    etree.XMLSchema(etree.parse(str(EXPORT_V1_XSD))).assertValid(etree.fromstring(out.getvalue()))


# --- bad input -----------------------------------------------------------------------

CORPUS: dict[str, tuple[str, list[str], str, int]] = {
    # case: (header, rows, expected text, expected line)
    "missing-required-column": (
        "localId;personId;tjeneste",
        [f"r-1;{PERSON};15"],
        "missing column 'code' for code",
        1,
    ),
    "bad-date": (COLUMNS, [*ROWS[:2], ROWS[2].replace("2022-05-10", "2022-13-10")], "from", 4),
    "bad-date-format": (COLUMNS, [ROWS[0].replace("2023-01-02", "02.01.2023")], "'%Y-%m-%d'", 2),
    "bad-code": (COLUMNS, [ROWS[0].replace(";15;", ";1 5;")], "code is not a service code", 2),
    "formula": (COLUMNS, [*ROWS[:1], ROWS[1].replace(";6;", ";=cmd|' /C calc'!A0;")], "formula", 3),
    "formula-at": (COLUMNS, [ROWS[0].replace("Donald Duck", "@SUM(A1:A9)")], "formula", 2),
    "formula-plus": (COLUMNS, [ROWS[0].replace("310000027", "+cmd|'/C calc'!A0")], "formula", 2),
    "formula-minus": (COLUMNS, [ROWS[0].replace("3,5", "-2+3+cmd|' /C calc'!A0")], "formula", 2),
    "person-id-form": (COLUMNS, [ROWS[0].replace(PERSON, PERSON + "0")], "personId is not 11", 2),
    "two-people-one-local-id": (
        COLUMNS,
        [ROWS[0], ROWS[1].replace(PERSON, OTHER)],
        "personId differs from the first row of this localId (line 2)",
        3,
    ),
    "not-grouped": (COLUMNS, [ROWS[0], ROWS[2], ROWS[1]], "sort the export by the localId", 4),
    "cell-count": (COLUMNS, [ROWS[0] + ";extra"], "row has 10 cells but the header has 9", 2),
    "empty-local-id": (COLUMNS, [ROWS[0].replace("r-1", "")], "localId is empty", 2),
    "bad-hours": (COLUMNS, [ROWS[0].replace("3,5", "3,5t")], "hoursPerWeek is not a number", 2),
    "bad-rehabilitation": (COLUMNS, [ROWS[0].replace(";ja", ";kanskje")], "rehabilitation", 2),
    "bad-quoting": (COLUMNS, [ROWS[0], f'r-2;"{OTHER}"x;;21;;;;;'], "not readable as CSV", 3),
    "empty-file": ("", [], "the export is empty", 1),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_gives_one_located_privacy_safe_error(case: str, tmp_path: Path) -> None:
    header, rows, expected, line = CORPUS[case]
    path = tmp_path / "export.csv"
    path.write_text("\n".join([header, *rows]) + ("\n" if rows else ""), encoding="utf-8")
    with pytest.raises(SourceError) as info:
        read_all(path)
    assert len(info.value.problems) == 1, info.value.lines()
    problem = info.value.problems[0]
    assert (problem.location.file, problem.location.line) == (str(path), line)
    text = str(problem)
    assert expected in problem.message
    assert not re.search(r"\d{11}", text) and "Donald" not in text and "calc" not in text


def test_windows_1252_read_as_utf8_names_the_line(tmp_path: Path) -> None:
    rows = [ROWS[0], ROWS[2].replace(";;21;", ";Bjørn Ås;21;")]
    path = csv_file(tmp_path, rows, encoding="cp1252")
    with pytest.raises(SourceError) as info:
        read_all(path)
    (problem,) = info.value.problems
    assert problem.location.line == 3 and problem.location.column == 19
    assert "not valid utf-8" in problem.message and "windows-1252" in problem.message
    assert "Bj" not in str(problem)


def test_a_nul_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes((COLUMNS + "\n" + ROWS[0] + "\n").replace("Donald", "Don\x00ald").encode())
    with pytest.raises(SourceError, match=r"nul\.csv:2:1: the name cell contains a control"):
        read_all(path)


def test_a_mapped_optional_column_must_exist(tmp_path: Path) -> None:
    path = csv_file(tmp_path, ROWS)
    with pytest.raises(
        SourceError,
        match=r"export\.csv:1:1: spec\.source\.options\.columns\.district: missing column "
        "'Bydel' for district",
    ):
        read_all(path, columns={"district": "Bydel"})


def test_a_missing_default_optional_column_is_just_not_read(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [f"r-1;{PERSON};15"], "localId;personId;code")
    _, (r,) = read_all(path)
    assert (r.name, r.rehabilitation, r.services[0].start) == (None, False, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delimeter": ","}, r"delimeter: unknown option \(did you mean 'delimiter'\?\)"),
        ({"municipality": None}, r"municipality: must be a 4-digit"),
        ({"municipality": 301}, r"municipality: must be a 4-digit kommunenummer, quoted"),
        ({"reportingYear": "2023"}, r"reportingYear: must be a year"),
        ({"epjVersion": ""}, r"epjVersion: must be a non-empty string"),
        ({"extractedAt": "yesterday"}, r"extractedAt: must be a date and time"),
        ({"delimiter": ";;"}, r"delimiter: must be one character"),
        ({"encoding": "klingon"}, r"encoding: unknown encoding"),
        ({"dateFormat": "YYYY"}, r"dateFormat: must be a strftime format"),
        ({"columns": {"personid": "fnr"}}, r"columns\.personid: unknown record field"),
        ({"columns": ["fnr"]}, r"columns: must map record fields"),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    path = csv_file(tmp_path, ROWS)
    with pytest.raises(SourceError, match=message):
        read_all(path, **options)


def test_header_options_are_required(tmp_path: Path) -> None:
    path = csv_file(tmp_path, ROWS)
    with pytest.raises(SourceError, match=r"spec\.source\.options\.epjSystem: missing"):
        CsvSource().read(SourceSpec(path, None, {"municipality": "9999", "reportingYear": 2023}))
    with pytest.raises(SourceError, match="reads no format profile"):
        CsvSource().read(SourceSpec(path, "iplos-export-v1", HEADER_OPTIONS))


def test_streaming_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    lines = ["localId;personId;code;from;to;hoursPerWeek;orgNumber"]
    for r in synthetic_recipients(recipients=20_000, seed=3):
        for s in r.services:
            cells = [r.local_id, r.person_id, s.code, s.start, s.end, s.hours_per_week]
            cells.append(s.org_number)
            lines.append(";".join("" if c is None else str(c) for c in cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tracemalloc.start()
    try:
        count = sum(1 for _ in CsvSource().read(SourceSpec(path, None, HEADER_OPTIONS)).recipients)
        _, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        kept = list(CsvSource().read(SourceSpec(path, None, HEADER_OPTIONS)).recipients)
        _, keeping_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(kept) == 20_000
    # Only the finished localIds are remembered (to refuse one that comes back).
    assert streaming_peak * 4 < keeping_peak
