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

Record fields and their default column names (the field name itself):
`localId`, `personId` and `code` are required columns; `name`, `district`,
`housing`, `rehabilitation`, `from`, `to`, `hoursPerWeek`, `decisionDate`,
`orgNumber` are read when the column exists. A column named in `columns` must
exist. Hours accept a decimal comma; rehabilitation accepts ja/nei, yes/no,
true/false, 1/0 and x. A CSV carries no functional assessments or diagnoses.

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
from typing import Any

from iplosctl.errors import Location, Problem, SourceError
from iplosctl.payload.export_writer import org_number_problem
from iplosctl.plugins import Export, SourceSpec
from iplosctl.records import ExportHeader, Recipient, Service

RECIPIENT_COLUMNS = ("localId", "personId", "name", "district", "housing", "rehabilitation")
SERVICE_COLUMNS = ("code", "from", "to", "hoursPerWeek", "decisionDate", "orgNumber")
REQUIRED_COLUMNS = ("localId", "personId", "code")
HEADER_OPTIONS = ("municipality", "reportingYear", "epjSystem", "epjVersion", "extractedAt")
OPTIONS = (*HEADER_OPTIONS, "columns", "delimiter", "encoding", "dateFormat")

_PERSON_ID = re.compile(r"[0-9]{11}")
_ORG_NUMBER = re.compile(r"[0-9]{9}")
_DISTRICT = re.compile(r"[0-9]{2,6}")
_CODE = re.compile(r"[0-9A-Za-z._-]{1,20}")
_HOURS = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
_NUMBER_LIKE = re.compile(r"[+-][0-9\s.,]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRUE = frozenset({"1", "true", "ja", "j", "yes", "y", "x"})
_FALSE = frozenset({"0", "false", "nei", "n", "no", ""})
_MAX_STRING = 200


@dataclass(frozen=True)
class _Settings:
    header: ExportHeader
    columns: Mapping[str, str]
    explicit: frozenset[str]
    delimiter: str
    encoding: str
    date_format: str


class CsvSource:
    """Reads a CSV export with a column mapping (the `csv` source plugin)."""

    name = "csv"

    def read(self, spec: SourceSpec) -> Export:
        """Check the options and the header row; stream recipients from the rows after it."""
        path = Path(spec.path)
        settings = _settings(str(path), spec)
        try:
            fh = path.open(encoding=settings.encoding, newline="", errors="strict")
        except FileNotFoundError:
            raise SourceError([Problem(Location(str(path)), "export file not found")]) from None
        except OSError as exc:
            raise SourceError(
                [Problem(Location(str(path)), f"cannot read: {exc.strerror}")]
            ) from None
        try:
            stream = _Stream(path, settings, fh)
            stream.read_header_row()
        except BaseException:
            fh.close()
            raise
        return Export(header=settings.header, recipients=stream.recipients())


class _Stream:
    def __init__(self, path: Path, settings: _Settings, fh: Any) -> None:
        self.path = path
        self.name = str(path)
        self.settings = settings
        self.fh = fh
        self.reader = csv.reader(fh, delimiter=settings.delimiter, strict=True)
        self.positions: dict[str, int] = {}
        self.width = 0
        self.line = 0

    def _problem(self, line: int, message: str) -> SourceError:
        return SourceError([Problem(Location(self.name, line, 1), message)])

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
        columns = self.settings.columns
        for key, column in columns.items():
            if column in seen:
                self.positions[key] = names.index(column)
            elif key in REQUIRED_COLUMNS or key in self.settings.explicit:
                hint = difflib.get_close_matches(column, names, n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self._problem(
                    self.line,
                    f"missing column {column!r} for {key}{did_you_mean}: add it to the export "
                    f"or map {key} in spec.source.options.columns",
                )

    def recipients(self) -> Iterator[Recipient]:
        try:
            yield from self._recipients()
        finally:
            self.fh.close()

    def _recipients(self) -> Iterator[Recipient]:
        finished: set[str] = set()
        group: _Group | None = None
        index = 0
        while (row := self._next_row()) is not None:
            if len(row) != self.width:
                raise self._problem(
                    self.line,
                    f"row has {len(row)} cells but the header has {self.width}: check "
                    "spec.source.options.delimiter and the quoting",
                )
            cells = self._cells(row)
            local_id = cells.get("localId", "")
            if not local_id:
                raise self._problem(self.line, "localId is empty: every row needs one")
            if group is not None and group.local_id != local_id:
                finished.add(group.local_id)
                yield group.build(index)
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
            yield group.build(index)

    def _cells(self, row: list[str]) -> dict[str, str]:
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
        return cells

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
        code = cells.get("code", "")
        if not _CODE.fullmatch(code):
            raise self._problem(
                line, "code is not a service code (1 to 20 letters, digits, '.', '_' or '-')"
            )
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

    def _checked(
        self, cells: dict[str, str], key: str, pattern: re.Pattern[str], form: str
    ) -> str | None:
        value = cells.get(key, "")
        if not value:
            return None
        if not pattern.fullmatch(value):
            raise self._problem(self.line, f"{key} is not {form}")
        return value

    def _org_number(self, cells: dict[str, str]) -> str | None:
        value = cells.get("orgNumber", "")
        if value and not _ORG_NUMBER.fullmatch(value):
            raise self._problem(self.line, org_number_problem(value, "orgNumber"))
        return value or None

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

    def build(self, index: int) -> Recipient:
        return Recipient(
            index=index,
            local_id=self.local_id,
            person_id=self.own.get("person_id", ""),
            name=self.own.get("name"),
            district=self.own.get("district"),
            housing=self.own.get("housing"),
            rehabilitation=self.rehabilitation,
            services=tuple(self.services),
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
    columns, explicit = _columns(options.get("columns", {}), fail)
    return _Settings(
        header=ExportHeader(
            municipality=municipality,
            reporting_year=year,
            epj_system=epj["epjSystem"],
            epj_version=epj["epjVersion"],
            extracted_at=extracted or None,
        ),
        columns=columns,
        explicit=explicit,
        delimiter=delimiter,
        # A UTF-8 byte-order mark is what Excel writes; it is not part of the first column.
        encoding="utf-8-sig" if canonical == "utf-8" else canonical,
        date_format=date_format,
    )


def _columns(
    given: Any, fail: Callable[[str, str], SourceError]
) -> tuple[dict[str, str], frozenset[str]]:
    if not isinstance(given, Mapping):
        raise fail("columns", "must map record fields to column names")
    known = (*RECIPIENT_COLUMNS, *SERVICE_COLUMNS)
    for key, value in given.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else f" (fields: {', '.join(known)})"
            raise fail(f"columns.{key}", f"unknown record field{suffix}")
        if not isinstance(value, str) or not value.strip():
            raise fail(f"columns.{key}", "must be a column name")
    columns = {key: str(given.get(key, key)).strip() for key in known}
    return columns, frozenset(given)


def _extracted_at(value: Any) -> dt.datetime | bool | None:
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
