"""The csv source's three files (export, assessments, diagnoses) against export format v1.

The same synthetic recipients `sandbox generate` produces are written once as
export v1 XML and once as a Norwegian spreadsheet set (semicolons, decimal
commas, dd.mm.yyyy, Windows-1252 or UTF-8 with a BOM, Norwegian header names
mapped in the manifest); both are planned through the CLI and must give the
same summary, findings and part digests.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from iplosctl.errors import SourceError
from iplosctl.payload.export_writer import write_export
from iplosctl.plugins import SourceSpec
from iplosctl.records import Recipient
from iplosctl.sandbox.generate import synthetic_header, synthetic_recipients
from iplosctl_source_csv import CsvSource
from tests.conftest import DEMO_MANIFEST

TODAY = "2024-01-05"
MAIN_COLUMNS = {
    "localId": "Journalnr",
    "personId": "Fødselsnummer",
    "name": "Navn",
    "district": "Bydel",
    "rehabilitation": "Rehabilitering",
    "code": "Tjeneste",
    "from": "Fra dato",
    "to": "Til dato",
    "hoursPerWeek": "Timer per uke",
    "decisionDate": "Vedtaksdato",
    "orgNumber": "Org.nr",
}
ASSESSMENT_COLUMNS = {
    "localId": "Journalnr",
    "variable": "Variabel",
    "score": "Skår",
    "date": "Vurdert dato",
}
DIAGNOSIS_COLUMNS = {"localId": "Journalnr", "code": "Diagnose"}
DIAGNOSES = (("F03",), ("I63.9", "E11"), ())


def recipients(count: int, seed: int = 11) -> list[Recipient]:
    """`sandbox generate`'s recipients; some get a bydel and diagnoses (it makes none)."""
    out = []
    for r in synthetic_recipients(recipients=count, seed=seed, test_persons=2):
        district = "030101" if r.index % 5 == 0 else None
        diagnoses = DIAGNOSES[r.index % 3] if r.index % 4 else ()
        out.append(dataclasses.replace(r, district=district, diagnoses=diagnoses))
    return out


def _date(value: dt.date | None) -> str:
    return value.strftime("%d.%m.%Y") if value else ""


def _hours(value: float | None) -> str:
    return "" if value is None else f"{value:g}".replace(".", ",")


def _write(path: Path, encoding: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_csv_set(records: Sequence[Recipient], folder: Path, encoding: str) -> Path:
    """Export, assessments and diagnoses files as a Norwegian EPJ's spreadsheet export."""
    folder.mkdir(parents=True, exist_ok=True)
    main = folder / "tjenester.csv"
    rows = []
    for r in records:
        for n, s in enumerate(r.services):
            first = n == 0  # the recipient's own fields on its first row, as many EPJs do
            rows.append(
                [
                    r.local_id,
                    r.person_id,
                    (r.name or "") if first else "",
                    (r.district or "") if first else "",
                    ("Ja" if r.rehabilitation else "Nei") if first else "",
                    s.code,
                    _date(s.start),
                    _date(s.end),
                    _hours(s.hours_per_week),
                    _date(s.decision_date),
                    s.org_number or "",
                ]
            )
    _write(main, encoding, list(MAIN_COLUMNS.values()), rows)
    _write(
        folder / "vurderinger.csv",
        encoding,
        list(ASSESSMENT_COLUMNS.values()),
        (
            [r.local_id, a.variable, str(a.score), _date(a.date)]
            for r in records
            for a in r.assessments
        ),
    )
    _write(
        folder / "diagnoser.csv",
        encoding,
        list(DIAGNOSIS_COLUMNS.values()),
        ([r.local_id, code] for r in records for code in r.diagnoses),
    )
    return main


def csv_options(encoding: str) -> dict[str, Any]:
    return {
        "municipality": "9999",
        "reportingYear": 2023,
        "epjSystem": "DemoEPJ",
        "epjVersion": "4.2.0",
        "extractedAt": "2024-01-03T08:00:00Z",
        "encoding": encoding,
        "dateFormat": "%d.%m.%Y",
        "columns": MAIN_COLUMNS,
        "assessments": {"path": "vurderinger.csv", "columns": ASSESSMENT_COLUMNS},
        "diagnoses": {"path": "diagnoser.csv", "columns": DIAGNOSIS_COLUMNS},
    }


def manifest_for(root: Path, source: dict[str, Any]) -> Path:
    """The demo manifest in `root/manifests`, reading `source` (JSON is YAML)."""
    text = DEMO_MANIFEST.read_text(encoding="utf-8")
    start = text.index("  source:\n")
    end = text.index("  testPersons:")
    text = text[:start] + f"  source: {json.dumps(source, ensure_ascii=False)}\n" + text[end:]
    path = root / "manifests" / DEMO_MANIFEST.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def xml_set(root: Path, records: Sequence[Recipient]) -> Path:
    export = root / "exports" / "export.xml"
    export.parent.mkdir(parents=True)
    header = synthetic_header(
        municipality="9999", year=2023, epj_system="DemoEPJ", epj_version="4.2.0"
    )
    with export.open("wb") as fh:
        write_export(header, records, fh, include_names=True)
    source = {"plugin": "xml", "path": "../exports/export.xml", "format": "iplos-export-v1"}
    return manifest_for(root, source)


def csv_set(root: Path, records: Sequence[Recipient], encoding: str) -> Path:
    write_csv_set(records, root / "exports", encoding)
    source = {"plugin": "csv", "path": "../exports/tjenester.csv", "options": csv_options(encoding)}
    return manifest_for(root, source)


def planned(cli, manifest: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = cli("plan", manifest, "--format", "json", "--today", TODAY)
    assert result.code in (0, 1), result.all
    (submission,) = json.loads(result.out)["submissions"]
    return submission


def comparable(submission: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the export's shape: lines are the file's own, so they go."""
    findings = [
        {**f, "records": [r["record"] for r in f["records"]]} for f in submission["findings"]
    ]
    return {
        "action": submission["action"],
        "summary": submission["summary"],
        "findings": findings,
        "parts": submission["parts"],
        "payload": submission["digests"]["payload"],
    }


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("count", [40, 1_200])
@pytest.mark.parametrize(
    ("encoding", "option"), [("cp1252", "windows-1252"), ("utf-8-sig", "utf-8")]
)
def test_the_csv_set_plans_like_export_v1(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, count: int, encoding: str, option: str
) -> None:
    records = recipients(count)
    xml = planned(cli, xml_set(tmp_path / "xml", records))
    main = csv_set(tmp_path / "csv", records, encoding)
    manifest_text = main.read_text(encoding="utf-8").replace(f'"{encoding}"', f'"{option}"')
    main.write_text(manifest_text, encoding="utf-8")
    spreadsheet = planned(cli, main)
    raw = (tmp_path / "csv" / "exports" / "tjenester.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    assert "Fødselsnummer".encode(encoding.replace("-sig", "")) in raw and b";" in raw
    assert comparable(spreadsheet) == comparable(xml)
    # The data really went through: assessments, diagnoses, test persons, decimal hours.
    summary = xml["summary"]
    assert summary["recipients"] == count - 2 and summary["assessedPercent"] > 40
    assert any(f["rule"] == "test-person" and f["count"] == 2 for f in xml["findings"])
    assert spreadsheet["digests"]["source"] != xml["digests"]["source"]


def test_assessments_and_diagnoses_reach_the_payload(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = recipients(40)
    manifest = csv_set(tmp_path, records, "utf-8")
    full = planned(cli, manifest)
    text = manifest.read_text(encoding="utf-8")
    without = re.sub(r', "diagnoses": \{[^}]*\}\}', "", text)
    assert without != text
    manifest.write_text(without, encoding="utf-8")
    no_diagnoses = planned(cli, manifest)
    assert no_diagnoses["summary"] == full["summary"]
    assert no_diagnoses["digests"]["payload"] != full["digests"]["payload"]
    manifest.write_text(re.sub(r', "assessments": \{[^}]*\}\}', "", without), encoding="utf-8")
    neither = planned(cli, manifest)
    assert neither["summary"]["assessedPercent"] == 0 < full["summary"]["assessedPercent"]


# --- mapping, coverage and joins ------------------------------------------------------


def read(main: Path, options: dict[str, Any]) -> tuple[Any, list[Recipient]]:
    export = CsvSource().read(SourceSpec(main, None, options))
    return export, list(export.recipients)


def small_set(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return write_csv_set(recipients(12), tmp_path, "utf-8"), csv_options("utf-8")


def test_records_from_three_files_equal_the_generated_ones(tmp_path: Path) -> None:
    records = recipients(12)
    main = write_csv_set(records, tmp_path, "cp1252")
    _, read_back = read(main, csv_options("windows-1252"))
    strip = [
        dataclasses.replace(
            r, line=None, services=tuple(dataclasses.replace(s, line=None) for s in r.services)
        )
        for r in read_back
    ]
    assert strip == records
    assert sum(len(r.assessments) for r in records) > 100
    assert sum(len(r.diagnoses) for r in records) > 5


def test_coverage_says_where_each_field_is_read_and_how_often(tmp_path: Path) -> None:
    records = recipients(12)
    main = write_csv_set(records, tmp_path, "utf-8")
    export, _ = read(main, csv_options("utf-8"))
    coverage = export.coverage
    assert coverage.mapped["recipient.personId"] == "Fødselsnummer"
    assert coverage.mapped["service.hoursPerWeek"] == "Timer per uke"
    assert coverage.mapped["assessment.score"] == "vurderinger.csv: Skår"
    assert coverage.mapped["diagnosis.code"] == "diagnoser.csv: Diagnose"
    services = [s for r in records for s in r.services]
    assert coverage.items["recipient"] == 12 and coverage.items["service"] == len(services)
    assert coverage.items["assessment"] == sum(len(r.assessments) for r in records)
    assert coverage.items["diagnosis"] == sum(len(r.diagnoses) for r in records)
    assert coverage.present["recipient.district"] == sum(1 for r in records if r.district)
    hours = sum(1 for s in services if s.hours_per_week is not None)
    assert coverage.present["service.hoursPerWeek"] == hours < len(services)
    assert coverage.unread == []


def test_a_column_nobody_maps_is_listed_once(tmp_path: Path) -> None:
    main, options = small_set(tmp_path)
    for path in (main, tmp_path / "vurderinger.csv"):
        lines = path.read_text(encoding="utf-8").splitlines()
        lines = [lines[0] + ";Kommentar;Saksbehandler"] + [x + ";fritekst;" for x in lines[1:]]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    export, records = read(main, options)
    assert export.coverage.unread == [
        "Kommentar",
        "Saksbehandler",
        "vurderinger.csv: Kommentar",
        "vurderinger.csv: Saksbehandler",
    ]
    assert len(records) == 12


def test_an_unread_column_name_is_scrubbed(tmp_path: Path) -> None:
    main, options = small_set(tmp_path)
    lines = main.read_text(encoding="utf-8").splitlines()
    lines = [lines[0] + ";Notat 05903813050"] + [x + ";" for x in lines[1:]]
    main.write_text("\n".join(lines) + "\n", encoding="utf-8")
    export, _ = read(main, options)
    assert export.coverage.unread == ["Notat [id]"]


@pytest.mark.parametrize(
    ("file", "key", "column"),
    [
        ("tjenester.csv", "columns.hoursPerWeek", "Timer per uke"),
        ("vurderinger.csv", "assessments.columns.score", "Skår"),
        ("diagnoser.csv", "diagnoses.columns.code", "Diagnose"),
    ],
)
def test_a_mapped_column_that_is_missing_is_a_one_line_error(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, file: str, key: str, column: str
) -> None:
    manifest = csv_set(tmp_path, recipients(12), "utf-8")
    path = tmp_path / "exports" / file
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(column, "Noe annet", 1), encoding="utf-8")
    result = cli("plan", manifest, "--today", TODAY)
    assert result.code == 1
    (line,) = [x for x in result.err.splitlines() if x.strip()]
    assert f"{file}:1:1: spec.source.options.{key}: missing column {column!r}" in line


def test_a_missing_second_file_is_a_one_line_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = csv_set(tmp_path, recipients(12), "utf-8")
    (tmp_path / "exports" / "diagnoser.csv").unlink()
    result = cli("plan", manifest, "--today", TODAY)
    assert result.code == 1
    (line,) = [x for x in result.err.splitlines() if x.strip()]
    assert line.endswith("exports/diagnoser.csv: diagnosis file not found")


def _rewrite_rows(path: Path, change: Any) -> None:
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([header, *change(rows)]) + "\n", encoding="utf-8")


def test_a_row_for_no_recipient_is_located(tmp_path: Path) -> None:
    main, options = small_set(tmp_path)
    side = tmp_path / "vurderinger.csv"
    _rewrite_rows(side, lambda rows: [*rows[:3], "r-999999;1;3;01.02.2023", *rows[3:]])
    with pytest.raises(SourceError) as info:
        read(main, options)
    (line,) = info.value.lines()
    assert line.startswith(f"{side}:5:1: this assessment row's localId is not in the export")
    assert "sort the export and this file by localId" in line and "r-999" not in line


def test_a_second_file_in_another_order_is_refused(tmp_path: Path) -> None:
    main, options = small_set(tmp_path)
    side = tmp_path / "diagnoser.csv"
    # The last recipient's rows now come first: they are taken when the export reaches
    # that recipient, and the first row left over (line 4) is where the order broke.
    _rewrite_rows(side, lambda rows: list(reversed(rows)))
    with pytest.raises(SourceError, match=r"diagnoser\.csv:4:1: this diagnosis row's localId"):
        read(main, options)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("r-000001;1;tre;01.02.2023", "score is not a whole number"),
        ("r-000001;1;3;2023-02-01", "date is not a date in the format '%d.%m.%Y'"),
        (";1;3;01.02.2023", "localId is empty"),
        ("r-000001;=1+2;3;01.02.2023", "formula"),
    ],
)
def test_bad_assessment_rows_are_located(tmp_path: Path, row: str, message: str) -> None:
    main, options = small_set(tmp_path)
    side = tmp_path / "vurderinger.csv"
    _rewrite_rows(side, lambda rows: [row, *rows])
    with pytest.raises(SourceError) as info:
        read(main, options)
    (line,) = info.value.lines()
    assert line.startswith(f"{side}:2:1: ") and message in line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"assessments": "vurderinger.csv"}, r"options\.assessments: must be a mapping"),
        ({"assessments": {"path": ""}}, r"options\.assessments\.path: must be the file's path"),
        ({"diagnoses": {"path": "d.csv", "sti": 1}}, r"options\.diagnoses\.sti: unknown option"),
        (
            {"diagnoses": {"path": "d.csv", "columns": {"kode": "x"}}},
            r"options\.diagnoses\.columns\.kode: unknown record field \(did you mean 'code'",
        ),
    ],
)
def test_bad_side_file_options_name_the_option(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    main, base = small_set(tmp_path)
    base = {k: v for k, v in base.items() if k not in ("assessments", "diagnoses")}
    with pytest.raises(SourceError, match=message):
        read(main, base | options)


def test_a_changed_second_file_changes_the_plan(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = csv_set(tmp_path, recipients(12), "utf-8")
    first = planned(cli, manifest)
    side = tmp_path / "exports" / "vurderinger.csv"
    # Drop the first assessment's date: the size changes too, so the test does not depend
    # on the file system's mtime resolution.
    _rewrite_rows(side, lambda rows: [rows[0].rsplit(";", 1)[0] + ";", *rows[1:]])
    second = planned(cli, manifest)  # the plan cache must not answer for the old file
    assert second["digests"]["payload"] != first["digests"]["payload"]
    assert second["digests"]["source"] != first["digests"]["source"]


def test_three_files_stream_in_flat_memory(tmp_path: Path) -> None:
    import tracemalloc

    records = recipients(6_000, seed=5)
    main = write_csv_set(records, tmp_path, "utf-8")
    options = csv_options("utf-8")
    tracemalloc.start()
    try:
        count = sum(1 for _ in CsvSource().read(SourceSpec(main, None, options)).recipients)
        _, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        kept = list(CsvSource().read(SourceSpec(main, None, options)).recipients)
        _, keeping_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(kept) == 6_000
    # One recipient's rows per file (plus the export's finished localIds) while streaming.
    assert streaming_peak * 8 < keeping_peak


def test_a_csv_set_is_accepted_by_the_sandbox_register(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply → the embedded register (real AMQP, CMS, XSD check) → an accepted receipt."""
    monkeypatch.setenv("IPLOSCTL_STATE_DIR", str(tmp_path / "state"))
    records = recipients(40)
    manifest = csv_set(tmp_path, records, "cp1252")
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace('"cp1252"', '"windows-1252"'),
        encoding="utf-8",
    )
    applied = cli("apply", "--auto-approve", "--today", TODAY, manifest)
    assert applied.code == 0, applied.all
    received = cli("receipts", "--wait", "20s", manifest)
    assert received.code == 0, received.all
    lock = manifest.with_name("demo-2023.lock.yaml").read_text(encoding="utf-8")
    assert lock.count("state: accepted") == 2, lock  # KPR_IPL and KPR_IDE, status 1
    assert not any(r.person_id in lock or r.local_id in lock for r in records)
    assert planned(cli, manifest)["action"] == "no-op"
