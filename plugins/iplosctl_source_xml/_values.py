"""Text → value: the XSD lexical forms, and the conversions a format profile declares.

Dates, hours and scores repeat endlessly in an export, so each converter
remembers what it has parsed (`_Remembered`): a hit is one C-level dict
lookup, so a profile full of conversions costs about what the plain forms do.

A converter raises `ValueError` for text it cannot read. The message of an
`Unreadable` is safe to print (it never quotes the text); any other
`ValueError` (from `strptime`, `fromisoformat`...) may quote it and is
replaced by the kind's description. A converter returns `MISSING` when the
profile says an empty value means "no value".
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from iplosctl.formats.profile import Conversion, FieldMap, ValueKind

#: "the field has no value", from a converter with emptyIsMissing
MISSING: Any = object()

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_YEAR = re.compile(r"\d{4}")
_DATE_TZ = re.compile(r"(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})?")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
KIND_TEXT: dict[str, str] = {
    "string": "text",
    "integer": "an integer",
    "decimal": "a decimal number (e.g. 7.5)",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a date and time (e.g. 2024-01-03T08:00:00Z)",
    "boolean": "true or false",
    "year": "a 4-digit year",
}
_REMEMBER = 4096


class Unreadable(ValueError):
    """A value a converter cannot read; the message never contains the value."""


class _Remembered(dict[str, Any]):
    """text → value for one value kind; parses on a miss (raising ValueError if bad)."""

    def __init__(self, parse: Callable[[str], Any]) -> None:
        super().__init__()
        self.parse = parse

    def __missing__(self, raw: str) -> Any:
        value = self.parse(raw)
        if len(self) >= _REMEMBER:
            self.clear()
        self[raw] = value
        return value


def _integer(raw: str) -> int:
    text = raw.strip()
    if not text.isascii() or not text.lstrip("+-").isdigit():
        raise ValueError("not an integer")
    return int(text)


def _decimal(raw: str) -> float:
    text = raw.strip()
    if not _DECIMAL.fullmatch(text):
        raise ValueError("not a decimal")
    return float(text)


def _date(raw: str) -> dt.date:
    match = _DATE_TZ.fullmatch(raw.strip())
    if match is None:
        raise ValueError("not a date")
    return dt.date.fromisoformat(match[1])


def _datetime(raw: str) -> dt.datetime:
    text = raw.strip()
    if len(text) < 19 or text[10] != "T":
        raise ValueError("not a date and time")
    return dt.datetime.fromisoformat(text)


def _boolean(raw: str) -> bool:
    value = _BOOLEANS.get(raw.strip())
    if value is None:
        raise ValueError("not a boolean")
    return value


def _year(raw: str) -> int:
    text = raw.strip()
    if not _YEAR.match(text) or (len(text) > 4 and text[4] not in "Z+-"):
        raise ValueError("not a year")
    return int(text[:4])


#: None means "keep the text" (strings are not copied or checked here; the XSD does that)
Convert = Callable[[str], Any] | None
CONVERTERS: dict[ValueKind, Convert] = {
    "string": None,
    "integer": _Remembered(_integer).__getitem__,
    "decimal": _Remembered(_decimal).__getitem__,
    "date": _Remembered(_date).__getitem__,
    "datetime": _datetime,
    "boolean": _Remembered(_boolean).__getitem__,
    "year": _year,
}


def converter_for(f: FieldMap) -> Convert:
    """The converter of one mapped field: the kind's plain one, or its profile's conversion."""
    if f.convert is None:
        return CONVERTERS[f.kind]
    return _Remembered(_conversion(f.kind, f.convert)).__getitem__


def reason(exc: ValueError, kind: ValueKind, f: FieldMap) -> str:
    """Why a value could not be read, without the value."""
    if isinstance(exc, Unreadable):
        return str(exc)
    patterns = f.convert.patterns if f.convert else ()
    if patterns:
        return f"it matches none of the patterns {', '.join(patterns)}"
    return f"it is not {KIND_TEXT[kind]}"


def _conversion(kind: ValueKind, c: Conversion) -> Callable[[str], Any]:
    """One function for trim → empty → map → parse, built once per field."""
    parse = _parser(kind, c)
    trim, empty_is_missing, value_map = c.trim, c.empty_is_missing, c.value_map

    def convert(raw: str) -> Any:
        text = raw.strip() if trim else raw
        if empty_is_missing and not text.strip():
            return MISSING
        if value_map is not None:
            mapped = value_map.get(text)
            if mapped is None:
                raise Unreadable("its value is not listed in the field's map")
            text = mapped
        return text if parse is None else parse(text)

    return convert


def _parser(kind: ValueKind, c: Conversion) -> Callable[[str], Any] | None:
    plain = {
        "string": None,
        "integer": _integer,
        "decimal": _decimal,
        "date": _date,
        "datetime": _datetime,
        "boolean": _boolean,
        "year": _year,
    }[kind]
    if kind in ("date", "datetime") and c.patterns:
        return _patterned(kind, c.patterns, zoneinfo.ZoneInfo(c.timezone))
    if kind == "datetime":
        zone = zoneinfo.ZoneInfo(c.timezone)
        return lambda text: _in_utc(_datetime(text), zone)
    if kind == "decimal" and c.decimal_separator == ",":
        return _decimal_comma
    if kind == "boolean" and c.true_values:
        words = {**dict.fromkeys(c.true_values, True), **dict.fromkeys(c.false_values, False)}

        def boolean(text: str) -> bool:
            value = words.get(text)
            if value is None:
                raise Unreadable("it is none of the field's trueValues and falseValues")
            return value

        return boolean
    return plain


def _patterned(
    kind: ValueKind, patterns: tuple[str, ...], zone: zoneinfo.ZoneInfo
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        for pattern in patterns:
            try:
                value = dt.datetime.strptime(text, pattern)
            except ValueError:
                continue
            return value.date() if kind == "date" else _in_utc(value, zone)
        raise Unreadable(f"it matches none of the patterns {', '.join(patterns)}")

    return parse


def _decimal_comma(text: str) -> float:
    """`3,5` → 3.5; a point is refused, since it could be a thousands separator."""
    if "." in text:
        raise Unreadable("it has a '.' but the field's decimalSeparator is ','")
    return _decimal(text.replace(",", ".", 1))


def _in_utc(value: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """A zone-less time is wall-clock time in `zone` (DST from the tz database), kept as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(dt.UTC)
