"""First-party source plugin: EPJ XML exports, read through a format profile.

`spec.format` names a format profile (iplosctl/formats/<name>.yaml, default
iplos-export-v1): the XSD to validate against and an XPath per record field, so
a new export format needs a profile, not code. The export is streamed with
`lxml.etree.iterparse`: only header and recipient end events reach Python, the
XSD is checked by libxml2 as the bytes go by, and each recipient is dropped from
the tree once read, so memory stays flat whatever the file's size.

Hardening, since an export is a file from outside: any DOCTYPE is refused before
parsing (no DTD, so no entity bombs and no external entities), and the parser
runs with no network, no entity expansion and libxml2's default size limits
(`huge_tree=False`). Depth beyond the profile's `maxDepth` is refused.

Every problem is a `SourceError` with one located line and without the
offending value: exports hold person ids and names (see `_diagnose`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from iplosctl.errors import Location, Problem, ProfileError, SourceError
from iplosctl.formats.profile import (
    ElementMap,
    FieldMap,
    FormatProfile,
    ValueKind,
    load_format,
    local_name,
)
from iplosctl.plugins import Export, SourceSpec
from iplosctl.records import Assessment, ExportHeader, Recipient, Service

from ._diagnose import HARDENED_PARSING, check_prolog, diagnose

#: bytes handed to libxml2 per read; larger chunks did not measure faster
CHUNK_SIZE = 1 << 16
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_YEAR = re.compile(r"\d{4}")
_DATE_TZ = re.compile(r"(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})?")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_KIND_TEXT: dict[str, str] = {
    "integer": "an integer",
    "decimal": "a decimal number (e.g. 7.5)",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a date and time (e.g. 2024-01-03T08:00:00Z)",
    "boolean": "true or false",
    "year": "a 4-digit year",
}


class XmlSource:
    """Reads an XML export through a format profile (the `xml` source plugin)."""

    name = "xml"

    def profile_files(self, spec: SourceSpec) -> tuple[Path, ...]:
        """The format profile YAML and its XSD (compiled here, so validate finds a bad one)."""
        profile = load_format(spec.format)
        profile.xml_schema()
        return profile.files

    def read(self, spec: SourceSpec) -> Export:
        """Check the prolog, stream to the end of the header, then stream recipients."""
        path = Path(spec.path)
        name = str(path)
        if spec.options:
            key = sorted(spec.options)[0]
            raise SourceError(
                [
                    Problem(
                        Location(name),
                        f"the xml source takes no options, remove spec.source.options.{key}",
                    )
                ]
            )
        try:
            profile = load_format(spec.format)
        except ProfileError as exc:
            raise SourceError([Problem(Location(name), exc.message)]) from None
        try:
            encoding = check_prolog(path)
        except FileNotFoundError:
            raise SourceError([Problem(Location(name), "export file not found")]) from None
        except IsADirectoryError:
            raise SourceError([Problem(Location(name), "is a folder, not an export")]) from None
        except OSError as exc:
            raise SourceError([Problem(Location(name), f"cannot read: {exc.strerror}")]) from None
        stream = _Stream(path, profile, encoding)
        items = stream.items()
        header = next(items)
        assert isinstance(header, ExportHeader)
        return Export(header=header, recipients=_recipients(items), payload=profile.payload)


def _recipients(items: Iterator[ExportHeader | Recipient]) -> Iterator[Recipient]:
    for item in items:
        assert isinstance(item, Recipient)
        yield item


class _Stream:
    """One pass over one export: the header first, then each recipient."""

    def __init__(self, path: Path, profile: FormatProfile, encoding: str | None) -> None:
        self.path = path
        self.name = str(path)
        self.profile = profile
        self.encoding = encoding
        self.header_reader = _ElementReader(profile.header, self.name)
        self.recipient_reader = _RecipientReader(profile, self.name)

    def items(self) -> Iterator[ExportHeader | Recipient]:
        profile = self.profile
        root_tag, header_tag, recipient_tag = (
            profile.root,
            profile.header.tag,
            profile.recipient.tag,
        )
        read_recipient = self.recipient_reader.read
        seen_header = False
        # With schema= and resolve_entities=False, lxml can swallow a well-formedness
        # error and simply stop (a truncated file "succeeds"). Only seeing the root's
        # end event proves the document was complete; anything less is diagnosed.
        complete = False
        index = 0
        with self.path.open("rb") as fh:
            events = etree.iterparse(
                fh,
                events=("end",),
                tag=(root_tag, header_tag, recipient_tag),
                schema=profile.xml_schema(),
                remove_blank_text=True,
                chunk_size=CHUNK_SIZE,
                **HARDENED_PARSING,
            )
            try:
                for _event, elem in events:
                    tag = elem.tag
                    if tag == recipient_tag and seen_header:
                        recipient = read_recipient(elem, index)
                        index += 1
                        elem.clear(keep_tail=False)
                        parent = elem.getparent()
                        while elem.getprevious() is not None:
                            del parent[0]
                        yield recipient
                    elif tag == header_tag and not seen_header:
                        seen_header = True
                        yield self._header(elem)
                    elif tag == root_tag and elem.getparent() is None:
                        complete = True
                    else:
                        break  # out of order: the second pass says where
            except etree.XMLSyntaxError as exc:
                raise self._diagnosed(exc) from None
        if not complete or not seen_header:
            raise self._diagnosed(None)

    def _diagnosed(self, exc: etree.XMLSyntaxError | None) -> SourceError:
        return diagnose(self.path, self.profile, encoding=self.encoding, streaming_error=exc)

    def _header(self, elem: etree._Element) -> ExportHeader:
        values = self.header_reader.read(elem)
        for key in ("municipality", "reporting_year", "epj_system", "epj_version"):
            if key not in values:
                raise _missing(self.name, elem, self.profile.header, key)
        return ExportHeader(**values)


class _ElementReader:
    """Reads the fields of one mapped element: children in one walk, attributes, then XPaths.

    A field mapped to one child step reads that child's text. Values are
    converted inside one `try`; only when one fails are the fields walked again
    one by one to name the culprit and its line (the fast path stays lean).
    """

    def __init__(self, emap: ElementMap, filename: str) -> None:
        self.emap = emap
        self.filename = filename
        children: dict[str, list[tuple[str, _Convert]]] = {}
        attributes: list[tuple[str, str, _Convert]] = []
        xpaths: list[tuple[etree.XPath, str, _Convert]] = []
        for f in emap.fields:
            convert = _CONVERTERS[f.kind]
            if f.child is not None:
                children.setdefault(f.child, []).append((f.target, convert))
            elif f.attribute is not None:
                attributes.append((f.attribute, f.target, convert))
            elif f.xpath is not None:
                xpaths.append((f.xpath, f.target, convert))
        self.children = {tag: tuple(fields) for tag, fields in children.items()}
        self.attributes = tuple(attributes)
        self.xpaths = tuple(xpaths)

    def read(self, elem: etree._Element) -> dict[str, Any]:
        values: dict[str, Any] = {}
        try:
            children = self.children
            if children:
                for child in elem:
                    fields = children.get(child.tag)
                    if fields is not None:
                        text = child.text
                        if text is not None:
                            for target, convert in fields:
                                if target not in values:
                                    values[target] = text if convert is None else convert(text)
            for attribute, target, convert in self.attributes:
                raw = elem.get(attribute)
                if raw is not None:
                    values[target] = raw if convert is None else convert(raw)
            if self.xpaths:
                self.read_xpaths(elem, values)
        except ValueError:
            raise self._bad_value(elem) from None
        return values

    def read_xpaths(self, elem: etree._Element, values: dict[str, Any]) -> None:
        """The fields mapped by a longer XPath; may raise ValueError."""
        for xpath, target, convert in self.xpaths:
            raw, _where = _evaluate(xpath, elem)
            if raw is not None:
                values[target] = raw if convert is None else convert(raw)

    def _bad_value(self, elem: etree._Element) -> SourceError:
        """Find the field whose value failed to convert; name it and its line, not the value."""
        for f in self.emap.fields:
            convert = _CONVERTERS[f.kind]
            candidates: list[tuple[str | None, etree._Element]]
            if f.child is not None:
                candidates = [(c.text, c) for c in elem if c.tag == f.child][:1]
            elif f.attribute is not None:
                candidates = [(elem.get(f.attribute), elem)]
            else:
                assert f.xpath is not None
                candidates = [_evaluate(f.xpath, elem)]
            for raw, where in candidates:
                if raw is None or convert is None:
                    continue
                try:
                    convert(raw)
                except ValueError:
                    return SourceError(
                        [
                            Problem(
                                Location(self.filename, where.sourceline or 0),
                                f"{_describe(f, self.emap)} is not {_KIND_TEXT[f.kind]}: "
                                "fix the export",
                            )
                        ]
                    )
        return SourceError(
            [Problem(Location(self.filename, elem.sourceline or 0), "a value cannot be read")]
        )


class _RecipientReader:
    """Builds one Recipient: its own fields, then services, assessments, diagnoses.

    The recipient's children are walked once: a child is either one of its own
    fields or an item (service, assessment, diagnosis) mapped to one child step.
    Items mapped by a longer XPath are found with it.
    """

    _OWN, _SERVICE, _ASSESSMENT, _DIAGNOSIS = range(4)

    def __init__(self, profile: FormatProfile, filename: str) -> None:
        self.filename = filename
        self.profile = profile
        self.own = _ElementReader(profile.recipient, filename)
        self.service = _ElementReader(profile.services, filename)
        self.assessment = (
            _ElementReader(profile.assessments, filename) if profile.assessments else None
        )
        self.diagnosis = _ElementReader(profile.diagnoses, filename) if profile.diagnoses else None
        self.dispatch: dict[str, tuple[int, Any]] = {
            tag: (self._OWN, fields) for tag, fields in self.own.children.items()
        }
        self.item_xpaths: list[tuple[etree.XPath, int]] = []
        items = (
            (self._SERVICE, profile.services),
            (self._ASSESSMENT, profile.assessments),
            (self._DIAGNOSIS, profile.diagnoses),
        )
        for kind, emap in items:
            if emap is None:
                continue
            if emap.tag is not None:
                self.dispatch[emap.tag] = (kind, None)
            elif emap.xpath is not None:
                self.item_xpaths.append((emap.xpath, kind))

    def read(self, elem: etree._Element, index: int) -> Recipient:
        values: dict[str, Any] = {}
        services: list[Service] = []
        assessments: list[Assessment] = []
        diagnoses: list[str] = []
        dispatch = self.dispatch
        try:
            for child in elem:
                entry = dispatch.get(child.tag)
                if entry is None:
                    continue
                kind, fields = entry
                if kind == 1:
                    services.append(self._service(child))
                elif kind == 2:
                    assessments.append(self._assessment(child))
                elif kind == 0:
                    text = child.text
                    if text is not None:
                        for target, convert in fields:
                            if target not in values:
                                values[target] = text if convert is None else convert(text)
                else:
                    diagnoses.append(self._diagnosis(child))
            own = self.own
            for attribute, target, convert in own.attributes:
                raw = elem.get(attribute)
                if raw is not None:
                    values[target] = raw if convert is None else convert(raw)
            if own.xpaths:
                own.read_xpaths(elem, values)
        except ValueError:
            raise self.own._bad_value(elem) from None
        for xpath, kind in self.item_xpaths:
            for child in xpath(elem):
                if not isinstance(child, etree._Element):
                    continue
                if kind == 1:
                    services.append(self._service(child))
                elif kind == 2:
                    assessments.append(self._assessment(child))
                else:
                    diagnoses.append(self._diagnosis(child))
        if values.get("local_id") is None:
            raise _missing(self.filename, elem, self.profile.recipient, "local_id")
        if "person_id" not in values:
            # Allowed by the format (the KPR_IPL part has none); the person-id rule decides.
            values["person_id"] = ""
        return Recipient(
            index=index,
            line=elem.sourceline,
            services=tuple(services),
            assessments=tuple(assessments),
            diagnoses=tuple(diagnoses),
            **values,
        )

    def _service(self, child: etree._Element) -> Service:
        values = self.service.read(child)
        if "code" not in values:
            raise _missing(self.filename, child, self.profile.services, "code")
        return Service(line=child.sourceline, **values)

    def _assessment(self, child: etree._Element) -> Assessment:
        assert self.assessment is not None and self.profile.assessments is not None
        values = self.assessment.read(child)
        for field in ("variable", "score"):
            if field not in values:
                raise _missing(self.filename, child, self.profile.assessments, field)
        return Assessment(**values)

    def _diagnosis(self, child: etree._Element) -> str:
        assert self.diagnosis is not None and self.profile.diagnoses is not None
        code = self.diagnosis.read(child).get("code")
        if code is None:
            raise _missing(self.filename, child, self.profile.diagnoses, "code")
        return str(code)


def _evaluate(xpath: etree.XPath, elem: etree._Element) -> tuple[str | None, etree._Element]:
    """A general XPath's first result as text, and the element to blame for a bad value."""
    result = xpath(elem)
    if isinstance(result, list):
        if not result:
            return None, elem
        first = result[0]
        if isinstance(first, etree._Element):
            return "".join(first.itertext()), first
        return str(first), elem
    if isinstance(result, bool):
        return ("true" if result else "false"), elem
    if isinstance(result, float):
        if result != result:  # NaN: XPath's "nothing there" for number()
            return None, elem
        return (str(int(result)) if result.is_integer() else repr(result)), elem
    text = str(result)
    return (text or None), elem


def _describe(f: FieldMap, emap: ElementMap) -> str:
    owner = local_name(emap.tag) if emap.tag else emap.key
    if f.child is not None:
        return f"<{local_name(f.child)}> in <{owner}>"
    if f.attribute is not None:
        return f"attribute {f.attribute!r} of <{owner}>"
    return f"{f.key} ({f.expression}) of <{owner}>"


def _missing(filename: str, elem: etree._Element, emap: ElementMap, target: str) -> SourceError:
    f = next(f for f in emap.fields if f.target == target)
    owner = local_name(emap.tag) if emap.tag else emap.key
    return SourceError(
        [
            Problem(
                Location(filename, elem.sourceline or 0),
                f"<{owner}> has no {f.key} ({f.expression}): every {owner} needs one",
            )
        ]
    )


# --- values in their XSD lexical forms --------------------------------------------
#
# Dates, hours and scores repeat endlessly in an export, so each kind converts
# through a dict that remembers what it has parsed: a hit is one C-level lookup.


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


_REMEMBER = 4096


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
_Convert = Callable[[str], Any] | None
_CONVERTERS: dict[ValueKind, _Convert] = {
    "string": None,
    "integer": _Remembered(_integer).__getitem__,
    "decimal": _Remembered(_decimal).__getitem__,
    "date": _Remembered(_date).__getitem__,
    "datetime": _datetime,
    "boolean": _Remembered(_boolean).__getitem__,
    "year": _year,
}
