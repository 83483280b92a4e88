"""First-party source plugin: tabular exports (CSV), one row per service.

For EPJs that can only export a spreadsheet. Everything a CSV cannot say comes
from `spec.source.options` in the manifest:

    source:
      plugin: csv
      path: ../exports/fjordvik-2023.csv
      options:
        municipality: "9998"          # required: the export header, which a CSV has not
        reportingYear: 2023           # required
        epjSystem: FjordEPJ           # required
        epjVersion: 7.1.3             # required
        extractedAt: "2024-01-03T08:00:00Z"   # optional
        delimiter: ";"                # default ";" (what Norwegian Excel writes)
        encoding: utf-8               # default utf-8 (a BOM is fine); e.g. windows-1252
        dateFormat: "%Y-%m-%d"        # default ISO dates; e.g. "%d.%m.%Y"
        columns:                      # record field → column name in the header row
          localId: journalnr
          personId: fnr
          code: tjeneste
          from: fra
          to: til
          hoursPerWeek: timer
        assessments:                  # optional: a second file, one row per scored variable
          path: vurderinger.csv       # relative to the export's folder
          columns: {localId: journalnr, variable: variabel, score: skaar, date: dato}
        diagnoses:                    # optional: a third file, one row per diagnosis code
          path: diagnoser.csv
          columns: {localId: journalnr, code: diagnose}

Record fields and their default column names (the field name itself):
`localId`, `personId` and `code` are required columns; `name`, `district`,
`housing`, `rehabilitation`, `from`, `to`, `hoursPerWeek`, `decisionDate`,
`orgNumber` are read when the column exists. A column named in `columns` must
exist. Hours accept a decimal comma; rehabilitation accepts ja/nei, yes/no,
true/false, 1/0 and x.

Assessments and diagnoses come from a second and third file, joined to the
export by localId. Their fields and default column names: `localId`,
`variable`, `score` (an integer: the `score` rule checks 1–5 or 9) and `date`
(optional) for assessments; `localId` and `code` for diagnoses. They are read
with the export's delimiter, encoding and dateFormat. Each is a streaming
merge, not a lookup: its rows must come in the same order of localId as the
export's (sort all files by localId, or export them in one order), each
recipient's rows next to each other, and a recipient without any simply has
none. A row whose localId is not in the export, or that is out of order,
stops the plan at that row's line once the export has been read, naming the
file. So memory is one recipient's rows per file and one row of look-ahead,
whatever the size, plus the finished localIds of the export (see below; about
6 MB at 100,000 recipients). Measured: a plan of 100,000 recipients in three
files (Windows-1252, 1.2 million rows) peaked at 105 MB RSS, the same data as
export v1 XML at 95 MB. `inputs()` names the second and third file, so the
plan digests them with the export and its cache notices when one changes.

Columns: a column that `columns` names and the header lacks is an error
naming the file, the header line and the option key
(`spec.source.options.columns.district`); so is a missing required column. A
header column that no field reads is listed once in the export's coverage
(`Export.coverage.unread`, as `file: column` for the second and third file),
which the plan shows as one warning. The coverage also says which column each
field is read from and how many rows had a value, so a mapped column that is
empty in every row can block the plan.

Grouping: the rows of one recipient (same localId) must be next to each other,
as an EPJ writes them; rows are grouped as they stream, so memory stays flat
except for the set of localIds already finished, which is kept to refuse a
localId that comes back later (sort the file by localId to fix that). The
recipient's own fields come from its first row; a later row may leave them
empty but must not contradict them.

Cells that look like spreadsheet formulas (`=…`, `@…`, or `+`/`-` followed by
anything but a number) are refused: they are CSV injection, not IPLOS data.
Errors name the file and line, never a cell's content.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from iplosctl.errors import Location, Problem, SourceError
from iplosctl.payload.export_writer import org_number_problem
from iplosctl.plugins import Export, FieldCoverage, SourceSpec
from iplosctl.privacy import scrub
from iplosctl.records import Assessment, ExportHeader, Recipient, Service

RECIPIENT_COLUMNS = ("localId", "personId", "name", "district", "housing", "rehabilitation")
SERVICE_COLUMNS = ("code", "from", "to", "hoursPerWeek", "decisionDate", "orgNumber")
REQUIRED_COLUMNS = ("localId", "personId", "code")
ASSESSMENT_COLUMNS = ("localId", "variable", "score", "date")
DIAGNOSIS_COLUMNS = ("localId", "code")
#: option → (fields, required fields, the coverage name of one row)
SIDE_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "assessments": (ASSESSMENT_COLUMNS, ("localId", "variable", "score"), "assessment"),
    "diagnoses": (DIAGNOSIS_COLUMNS, ("localId", "code"), "diagnosis"),
}
HEADER_OPTIONS = ("municipality", "reportingYear", "epjSystem", "epjVersion", "extractedAt")
OPTIONS = (*HEADER_OPTIONS, "columns", "delimiter", "encoding", "dateFormat", *SIDE_FILES)
SIDE_OPTIONS = ("path", "columns")
OPTION_PREFIX = "spec.source.options"

_PERSON_ID = re.compile(r"[0-9]{11}")
_ORG_NUMBER = re.compile(r"[0-9]{9}")
_DISTRICT = re.compile(r"[0-9]{2,6}")
_CODE = re.compile(r"[0-9A-Za-z._-]{1,20}")
_HOURS = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
_SCORE = re.compile(r"[0-9]{1,3}")
_NUMBER_LIKE = re.compile(r"[+-][0-9\s.,]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRUE = frozenset({"1", "true", "ja", "j", "yes", "y", "x"})
_FALSE = frozenset({"0", "false", "nei", "n", "no", ""})
_MAX_STRING = 200
#: an unread column's name is shown in the plan: at most this long, scrubbed
_MAX_COLUMN_NAME = 60


@dataclass(frozen=True)
class _Table:
    """One CSV file and its column mapping: the export, or its assessments or diagnoses."""

    path: Path
    #: record field → column name (a default of the field's own name where not mapped)
    columns: Mapping[str, str]
    #: fields the manifest maps explicitly (their column must exist)
    explicit: frozenset[str]
    required: tuple[str, ...]
    #: where the mapping lives in the manifest, for messages
    option: str
    #: FieldCoverage's name for one row's item
    item: str


@dataclass(frozen=True)
class _Settings:
    header: ExportHeader
    main: _Table
    sides: Mapping[str, _Table]
    delimiter: str
    encoding: str
    date_format: str


class CsvSource:
    """Reads a CSV export with a column mapping (the `csv` source plugin)."""

    name = "csv"

    def read(self, spec: SourceSpec) -> Export:
        """Check the options and every file's header row; stream recipients after them."""
        settings = _settings(str(spec.path), spec)
        coverage = FieldCoverage()
        opened: list[_Rows] = []
        try:
            main = _Stream(settings.main, settings, _open(settings.main.path, settings), coverage)
            opened.append(main)
            main.read_header_row()
            for table in settings.sides.values():
                fh = _open(table.path, settings, f"{table.item} file")
                side = _SideRows(table, settings, fh, coverage)
                opened.append(side)
                side.read_header_row()
        except BaseException:
            for rows in opened:
                rows.fh.close()
            raise
        main.sides = [r for r in opened if isinstance(r, _SideRows)]
        return Export(header=settings.header, recipients=main.recipients(), coverage=coverage)

    def inputs(self, spec: SourceSpec) -> list[Path]:
        """Every file a plan of `spec` reads besides `spec.path` (the plan cache and digest
        must change when one of them does)."""
        try:
            settings = _settings(str(spec.path), spec)
        except SourceError:
            return []  # read() reports it
        return [table.path for table in settings.sides.values()]


def _open(path: Path, settings: _Settings, what: str = "export file") -> Any:
    try:
        return path.open(encoding=settings.encoding, newline="", errors="strict")
    except FileNotFoundError:
        raise SourceError([Problem(Location(str(path)), f"{what} not found")]) from None
    except IsADirectoryError:
        raise SourceError([Problem(Location(str(path)), "is a folder, not a CSV file")]) from None
    except OSError as exc:
        raise SourceError([Problem(Location(str(path)), f"cannot read: {exc.strerror}")]) from None


class _Rows:
    """One CSV file read row by row: its header, then each row's mapped cells."""

    def __init__(
        self, table: _Table, settings: _Settings, fh: Any, coverage: FieldCoverage
    ) -> None:
        self.table = table
        self.path = table.path
        self.name = str(table.path)
        self.settings = settings
        self.fh = fh
        self.coverage = coverage
        self.reader = csv.reader(fh, delimiter=settings.delimiter, strict=True)
        self.positions: dict[str, int] = {}
        self.width = 0
        self.line = 0

    def _problem(self, line: int, message: str, path: str = "") -> SourceError:
        return SourceError([Problem(Location(self.name, line, 1), message, path=path)])

    def _next_row(self) -> list[str] | None:
        """The next non-empty row, with self.line at its first line; None at the end."""
        while True:
            start = self.reader.line_num + 1
            try:
                row = next(self.reader)
            except StopIteration:
                return None
            except UnicodeDecodeError:
                line, column = _decode_error_position(self.path, self.settings.encoding)
                raise SourceError(
                    [
                        Problem(
                            Location(self.name, line, column),
                            f"bytes that are not valid {self.settings.encoding}: set "
                            "spec.source.options.encoding to the file's encoding "
                            "(e.g. windows-1252) or save it as UTF-8",
                        )
                    ]
                ) from None
            except csv.Error as exc:
                reason = str(exc).split(":")[0]
                raise self._problem(
                    self.reader.line_num, f"not readable as CSV ({reason}): check the quoting"
                ) from None
            self.line = start
            if row and any(cell.strip() for cell in row):
                return row

    def read_header_row(self) -> None:
        """Map fields to positions; a mapped or required column that is missing is an error."""
        row = self._next_row()
        if row is None:
            raise self._problem(1, "the export is empty (no header row): export it again")
        names = [cell.strip().lstrip("\ufeff") for cell in row]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise self._problem(self.line, f"column {name!r} appears twice in the header row")
            seen.add(name)
        self.width = len(names)
        table = self.table
        for key, column in table.columns.items():
            if column in seen:
                self.positions[key] = names.index(column)
            elif key in table.required or key in table.explicit:
                hint = difflib.get_close_matches(column, names, n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self._problem(
                    self.line,
                    f"missing column {column!r} for {key}{did_you_mean}: add it to the export "
                    f"or map {key} to one of its columns",
                    path=f"{table.option}.columns.{key}",
                )
        self._cover(names)

    def _cover(self, names: list[str]) -> None:
        """Record where each field is read from, and the columns nobody reads (names only)."""
        table, coverage = self.table, self.coverage
        side = table.item in ("assessment", "diagnosis")
        prefix = f"{self.path.name}: " if side else ""
        for key, position in self.positions.items():
            if side and key == "localId":
                continue  # the join key, not a field of the item
            owner = "recipient" if key in RECIPIENT_COLUMNS and not side else table.item
            coverage.mapped[f"{owner}.{key}"] = prefix + names[position]
        read = set(self.positions.values())
        for position, name in enumerate(names):
            if position not in read and name:
                shown = scrub(name)[:_MAX_COLUMN_NAME]
                if prefix + shown not in coverage.unread:
                    coverage.unread.append(prefix + shown)

    def _cells(self, row: list[str]) -> dict[str, str]:
        if len(row) != self.width:
            raise self._problem(
                self.line,
                f"row has {len(row)} cells but the header has {self.width}: check "
                "spec.source.options.delimiter and the quoting",
            )
        cells: dict[str, str] = {}
        for key, position in self.positions.items():
            cell = row[position].strip()
            if cell and cell[0] in "=+-@" and _looks_like_formula(cell):
                raise self._problem(
                    self.line,
                    f"the {key} cell looks like a spreadsheet formula (CSV injection): "
                    "remove it from the export",
                )
            if _CONTROL.search(cell):
                raise self._problem(
                    self.line,
                    f"the {key} cell contains a control character (a NUL byte or similar): "
                    "remove it from the export",
                )
            cells[key] = cell
        local_id = cells.get("localId", "")
        if not local_id:
            raise self._problem(self.line, "localId is empty: every row needs one")
        return cells

    def _checked(
        self, cells: dict[str, str], key: str, pattern: re.Pattern[str], form: str
    ) -> str | None:
        value = cells.get(key, "")
        if not value:
            return None
        if not pattern.fullmatch(value):
            raise self._problem(self.line, f"{key} is not {form}")
        return value

    def _date(self, cells: dict[str, str], key: str) -> dt.date | None:
        value = cells.get(key, "")
        if not value:
            return None
        try:
            return _parse_date(value, self.settings.date_format)
        except ValueError:
            raise self._problem(
                self.line,
                f"{key} is not a date in the format {self.settings.date_format!r}: fix the "
                "export or set spec.source.options.dateFormat",
            ) from None

    def _count_present(self, cells: dict[str, str], keys: tuple[str, ...]) -> None:
        present, item = self.coverage.present, self.table.item
        self.coverage.items[item] += 1
        for key in keys:
            if cells.get(key):
                present[f"{item}.{key}"] += 1


class _SideRows(_Rows):
    """The assessments or diagnoses file, merged into the export's recipients as they pass.

    A merge, so the memory is the rows of one recipient and one row of look-ahead:
    the file must list localIds in the export's order (see the module docstring).
    """

    def __init__(
        self, table: _Table, settings: _Settings, fh: Any, coverage: FieldCoverage
    ) -> None:
        super().__init__(table, settings, fh, coverage)
        self._ahead: tuple[dict[str, str], int] | None = None
        self._done = False

    def _peek(self) -> tuple[dict[str, str], int] | None:
        if self._ahead is None and not self._done:
            row = self._next_row()
            if row is None:
                self._done = True
            else:
                self._ahead = (self._cells(row), self.line)
        return self._ahead

    def take(self, local_id: str) -> list[Any]:
        """The items of `local_id` if they are next in the file; else none."""
        items = []
        while (ahead := self._peek()) is not None and ahead[0]["localId"] == local_id:
            cells, self.line = ahead
            self._ahead = None
            items.append(self._item(cells))
        return items

    def _item(self, cells: dict[str, str]) -> Any:
        if self.table.item == "diagnosis":
            self._count_present(cells, ("code",))
            code = cells.get("code", "")
            if not code:
                raise self._problem(self.line, "code is empty: every diagnosis row needs one")
            if len(code) > _MAX_STRING:
                raise self._problem(self.line, f"code is longer than {_MAX_STRING} characters")
            return code
        self._count_present(cells, ("variable", "score", "date"))
        variable = cells.get("variable", "")
        if not _CODE.fullmatch(variable):
            raise self._problem(
                self.line, "variable is not a code (1 to 20 letters, digits, '.', '_' or '-')"
            )
        score = cells.get("score", "")
        if not _SCORE.fullmatch(score):
            raise self._problem(self.line, "score is not a whole number (1–5, or 9)")
        return Assessment(variable=variable, score=int(score), date=self._date(cells, "date"))

    def close_checked(self) -> None:
        """At the end of the export: a row left over names no recipient, or is out of order."""
        try:
            ahead = self._peek()
            if ahead is not None:
                self.line = ahead[1]
                raise self._problem(
                    self.line,
                    f"this {self.table.item} row's localId is not in the export, or comes in "
                    "another order than the export's: sort the export and this file by localId",
                )
        finally:
            self.fh.close()


class _Stream(_Rows):
    """The export itself: rows grouped into recipients, each joined with its side rows."""

    sides: list[_SideRows]

    def recipients(self) -> Iterator[Recipient]:
        try:
            yield from self._recipients()
            for side in self.sides:
                side.close_checked()
        finally:
            self.fh.close()
            for side in self.sides:
                side.fh.close()

    def _recipients(self) -> Iterator[Recipient]:
        finished: set[str] = set()
        group: _Group | None = None
        index = 0
        while (row := self._next_row()) is not None:
            cells = self._cells(row)
            local_id = cells["localId"]
            if group is not None and group.local_id != local_id:
                finished.add(group.local_id)
                yield self._build(group, index)
                index += 1
                group = None
            if group is None:
                if local_id in finished:
                    raise self._problem(
                        self.line,
                        "this localId also has rows further up that are not directly above: "
                        "sort the export by the localId column",
                    )
                group = _Group(local_id, self.line)
            self._add(group, cells)
        if group is not None:
            yield self._build(group, index)

    def _build(self, group: _Group, index: int) -> Recipient:
        assessments: list[Assessment] = []
        diagnoses: list[str] = []
        for side in self.sides:
            items = side.take(group.local_id)
            (diagnoses if side.table.item == "diagnosis" else assessments).extend(items)
        coverage = self.coverage
        coverage.items["recipient"] += 1
        for key in group.present:
            coverage.present[f"recipient.{key}"] += 1
        return group.build(index, tuple(assessments), tuple(diagnoses))

    def _add(self, group: _Group, cells: dict[str, str]) -> None:
        line = self.line
        own = {
            "person_id": self._checked(cells, "personId", _PERSON_ID, "11 digits"),
            "name": _text(cells.get("name")),
            "district": self._checked(cells, "district", _DISTRICT, "2 to 6 digits"),
            "housing": self._checked(cells, "housing", _CODE, "a code"),
        }
        rehabilitation = cells.get("rehabilitation", "").lower()
        if rehabilitation not in _TRUE and rehabilitation not in _FALSE:
            raise self._problem(line, "rehabilitation is not ja/nei, yes/no, true/false or 1/0")
        if len(own["name"] or "") > _MAX_STRING:
            raise self._problem(line, f"name is longer than {_MAX_STRING} characters")
        for key, value in own.items():
            if value is None:
                continue
            known = group.own.get(key)
            if known is None:
                group.own[key] = value
            elif known != value:
                field = {"person_id": "personId"}.get(key, key)
                raise self._problem(
                    line,
                    f"{field} differs from the first row of this localId (line {group.line}): "
                    "one localId must be one person",
                )
        group.rehabilitation = group.rehabilitation or rehabilitation in _TRUE
        group.present.update(key for key in RECIPIENT_COLUMNS if cells.get(key))
        code = cells.get("code", "")
        if not _CODE.fullmatch(code):
            raise self._problem(
                line, "code is not a service code (1 to 20 letters, digits, '.', '_' or '-')"
            )
        self._count_present(cells, SERVICE_COLUMNS)
        group.services.append(
            Service(
                code=code,
                start=self._date(cells, "from"),
                end=self._date(cells, "to"),
                hours_per_week=self._hours(cells),
                decision_date=self._date(cells, "decisionDate"),
                org_number=self._org_number(cells),
                line=line,
            )
        )

    def _org_number(self, cells: dict[str, str]) -> str | None:
        value = cells.get("orgNumber", "")
        if value and not _ORG_NUMBER.fullmatch(value):
            raise self._problem(self.line, org_number_problem(value, "orgNumber"))
        return value or None

    def _hours(self, cells: dict[str, str]) -> float | None:
        value = cells.get("hoursPerWeek", "")
        if not value:
            return None
        if not _HOURS.fullmatch(value):
            raise self._problem(self.line, "hoursPerWeek is not a number of hours (e.g. 7,5)")
        return float(value.replace(",", "."))


@dataclass
class _Group:
    """The rows of one recipient, collected while they stream past."""

    local_id: str
    line: int

    def __post_init__(self) -> None:
        self.own: dict[str, str] = {}
        self.services: list[Service] = []
        self.rehabilitation = False
        #: recipient fields some row of this localId had a value for (coverage)
        self.present: set[str] = set()

    def build(
        self, index: int, assessments: tuple[Assessment, ...], diagnoses: tuple[str, ...]
    ) -> Recipient:
        return Recipient(
            index=index,
            local_id=self.local_id,
            person_id=self.own.get("person_id", ""),
            name=self.own.get("name"),
            district=self.own.get("district"),
            housing=self.own.get("housing"),
            rehabilitation=self.rehabilitation,
            services=tuple(self.services),
            assessments=assessments,
            diagnoses=diagnoses,
            line=self.line,
        )


def _text(value: str | None) -> str | None:
    return value or None


def _looks_like_formula(cell: str) -> bool:
    """`=…` and `@…` always; `+`/`-` unless what follows is a number (OWASP CSV injection)."""
    return cell[0] in "=@" or not _NUMBER_LIKE.fullmatch(cell)


_ISO = "%Y-%m-%d"
_DATE_CACHE: dict[tuple[str, str], dt.date] = {}


def _parse_date(value: str, date_format: str) -> dt.date:
    key = (value, date_format)
    known = _DATE_CACHE.get(key)
    if known is not None:
        return known
    if date_format == _ISO and len(value) == 10:
        parsed = dt.date.fromisoformat(value)
    else:
        parsed = dt.datetime.strptime(value, date_format).date()
    if len(_DATE_CACHE) > 20_000:
        _DATE_CACHE.clear()
    _DATE_CACHE[key] = parsed
    return parsed


def _decode_error_position(path: Path, encoding: str) -> tuple[int, int]:
    """Line and column of the first byte `encoding` cannot decode (only on the error path)."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        return before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
    return 1, 1


# --- options -------------------------------------------------------------------------


def _settings(name: str, spec: SourceSpec) -> _Settings:
    options = dict(spec.options or {})

    def fail(key: str, message: str) -> SourceError:
        return SourceError(
            [Problem(Location(name), message, path=f"spec.source.options.{key}".rstrip("."))]
        )

    if spec.format not in (None, "csv"):
        raise SourceError(
            [Problem(Location(name), "the csv source reads no format profile: remove it")]
        )
    for key in options:
        if key not in OPTIONS:
            hint = difflib.get_close_matches(key, OPTIONS, n=1)
            suffix = (
                f" (did you mean {hint[0]!r}?)" if hint else f" (options: {', '.join(OPTIONS)})"
            )
            raise fail(key, f"unknown option{suffix}")
    for key in ("municipality", "reportingYear", "epjSystem", "epjVersion"):
        if key not in options:
            raise fail(key, "missing: a CSV has no header block, so the manifest must say it")
    municipality = options["municipality"]
    if not isinstance(municipality, str) or not re.fullmatch(r"[0-9]{4}", municipality):
        raise fail("municipality", 'must be a 4-digit kommunenummer, quoted (e.g. "0301")')
    year = options["reportingYear"]
    if not isinstance(year, int) or isinstance(year, bool) or not 1000 <= year <= 9999:
        raise fail("reportingYear", "must be a year, e.g. 2023")
    epj = {}
    for key in ("epjSystem", "epjVersion"):
        value = options[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise fail(key, "must be a non-empty string")
        epj[key] = value
    extracted = _extracted_at(options.get("extractedAt"))
    if extracted is False:
        raise fail("extractedAt", "must be a date and time, e.g. 2024-01-03T08:00:00Z")
    delimiter = options.get("delimiter", ";")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise fail("delimiter", "must be one character, e.g. ';' or ','")
    encoding = options.get("encoding", "utf-8")
    try:
        if not isinstance(encoding, str):
            raise LookupError(encoding)
        canonical = codecs.lookup(encoding).name
    except LookupError:
        raise fail("encoding", "unknown encoding (e.g. utf-8, windows-1252)") from None
    date_format = options.get("dateFormat", _ISO)
    if not isinstance(date_format, str) or "%" not in date_format:
        raise fail("dateFormat", "must be a strftime format, e.g. '%d.%m.%Y'")
    known = (*RECIPIENT_COLUMNS, *SERVICE_COLUMNS)
    columns, explicit = _columns(options.get("columns", {}), known, "columns", fail)
    main = _Table(
        path=Path(spec.path),
        columns=columns,
        explicit=explicit,
        required=REQUIRED_COLUMNS,
        option=OPTION_PREFIX,
        item="service",
    )
    sides = {
        key: _side_table(key, options[key], Path(spec.path).parent, fail)
        for key in SIDE_FILES
        if key in options
    }
    return _Settings(
        header=ExportHeader(
            municipality=municipality,
            reporting_year=year,
            epj_system=epj["epjSystem"],
            epj_version=epj["epjVersion"],
            extracted_at=extracted or None,
        ),
        main=main,
        sides=sides,
        delimiter=delimiter,
        # A UTF-8 byte-order mark is what Excel writes; it is not part of the first column.
        encoding="utf-8-sig" if canonical == "utf-8" else canonical,
        date_format=date_format,
    )


def _side_table(
    key: str, given: Any, folder: Path, fail: Callable[[str, str], SourceError]
) -> _Table:
    """`options.assessments` or `options.diagnoses`: a file beside the export and its mapping."""
    fields, required, item = SIDE_FILES[key]
    if not isinstance(given, Mapping):
        raise fail(key, "must be a mapping with path (and columns), e.g. {path: vurderinger.csv}")
    for option in given:
        if option not in SIDE_OPTIONS:
            raise fail(f"{key}.{option}", f"unknown option (options: {', '.join(SIDE_OPTIONS)})")
    path = given.get("path")
    if not isinstance(path, str) or not path.strip():
        raise fail(f"{key}.path", "must be the file's path, relative to the export's folder")
    columns, explicit = _columns(given.get("columns", {}), fields, f"{key}.columns", fail)
    return _Table(
        path=folder / path,
        columns=columns,
        explicit=explicit,
        required=required,
        option=f"{OPTION_PREFIX}.{key}",
        item=item,
    )


def _columns(
    given: Any, known: tuple[str, ...], option: str, fail: Callable[[str, str], SourceError]
) -> tuple[dict[str, str], frozenset[str]]:
    if not isinstance(given, Mapping):
        raise fail(option, "must map record fields to column names")
    for key, value in given.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else f" (fields: {', '.join(known)})"
            raise fail(f"{option}.{key}", f"unknown record field{suffix}")
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{option}.{key}", "must be a column name")
    columns = {key: str(given.get(key, key)).strip() for key in known}
    return columns, frozenset(given)


def _extracted_at(value: Any) -> dt.datetime | Literal[False] | None:
    """The option as a datetime, None when absent, False when unreadable."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return False
    return False
