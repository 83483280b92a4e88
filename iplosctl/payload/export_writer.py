"""Export format v1 written as a byte stream: the one writer for payloads and test data.

The KPR payload and the sandbox generator share this writer so that what the
generator produces is exactly what iplosctl would send. Output is deterministic
(same records, same flags → same bytes: fixed element order from the XSD, fixed
layout, no clock), so a payload digest is stable across runs and machines. It
streams: records are formatted as they arrive and flushed in chunks, so a
100,000-recipient payload never sits in memory as a tree.

Names are never written into a payload: `include_names` exists only so the
sandbox generator can imitate an EPJ export with test users ("Donald Duck") in
it. Values the format cannot carry raise `PayloadError` naming the record index,
never the value, instead of producing XML that fails the XSD at the register.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from iplosctl.errors import PayloadError
from iplosctl.formats import EXPORT_V1_NAMESPACE
from iplosctl.records import ExportHeader, Recipient

#: writer flags per message part content (profile `messageParts[].content`)
CONTENT_FLAGS: dict[str, dict[str, bool]] = {
    "full": {},
    "without-person-ids": {"include_person_ids": False},
    "identity-only": {"include_services": False},
}

# The XSD's simple types (iplos-export-v1.xsd), checked here so a bad record fails
# with its index instead of at the register.
_MUNICIPALITY = re.compile(r"[0-9]{4}")
_PERSON_ID = re.compile(r"[0-9]{11}")
_ORG_NUMBER = re.compile(r"[0-9]{9}")
_DISTRICT = re.compile(r"[0-9]{2,6}")
_CODE = re.compile(r"[0-9A-Za-z._-]{1,20}")
_MAX_STRING = 200
# Characters that need escaping, or that XML 1.0 cannot carry at all.
_SPECIAL = re.compile(r"[&<>\"\r\n\t\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\r": "&#13;",
        "\n": "&#10;",
        "\t": "&#9;",
    }
)
#: flush to the output after this many pieces (about 100 recipients)
_FLUSH_EVERY = 2048


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Written:
    """What `write_export` wrote: recipients and bytes."""

    recipients: int
    size: int


@dataclass(frozen=True)
class ExportDigest:
    """A payload's digest (`sha256:<hex>`, as the lockfile records it) and size."""

    digest: str
    size: int
    recipients: int


class _Bad(Exception):
    """A value the format cannot carry; becomes PayloadError with the record index."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        #: the line of the item (a service) that holds the value, when it has its own
        self.line = line


class RecordPayloadError(PayloadError):
    """One record holds a value the format cannot carry; `reason` never quotes the value.

    The plan turns it into a `SourceError` located in the export file (which
    the writer does not know), so the user learns which file and record to fix.
    """

    def __init__(self, index: int, line: int | None, reason: str) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"recipient {index}{where}: {reason}: fix the source export")
        self.index = index
        self.line = line
        self.reason = reason


class ExportWriter:
    """Push-style writer: the header on creation, then `add` per recipient, then `finish`.

    For callers that see records one at a time (the plan streams each record
    through rules, summary and one writer per message part); `write_export` is
    the same for an iterable.
    """

    def __init__(
        self,
        out: BinaryIO | _Sink,
        header: ExportHeader,
        *,
        include_person_ids: bool = True,
        include_services: bool = True,
        include_names: bool = False,
    ) -> None:
        self._out = out
        self._person_ids = include_person_ids
        self._services = include_services
        self._names = include_names
        self._pieces: list[str] = [
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<IplosExport xmlns="{EXPORT_V1_NAMESPACE}" version="1">\n',
        ]
        try:
            self._pieces.extend(_header(header))
        except _Bad as exc:
            raise PayloadError(f"export header: {exc}: fix the source export") from None
        self._size = 0
        self._count = 0
        self._finished = False

    def add(self, recipient: Recipient) -> None:
        """Format one recipient; flushes to `out` every hundred or so."""
        try:
            _recipient(self._pieces, recipient, self._person_ids, self._services, self._names)
        except _Bad as exc:
            line = exc.line or recipient.line
            raise RecordPayloadError(recipient.index, line, str(exc)) from None
        self._count += 1
        if len(self._pieces) >= _FLUSH_EVERY:
            self._size += _flush(self._pieces, self._out)

    def finish(self) -> Written:
        """Close the root element and flush; the writer cannot be used afterwards."""
        if not self._finished:
            self._finished = True
            self._pieces.append("</IplosExport>\n")
            self._size += _flush(self._pieces, self._out)
        return Written(recipients=self._count, size=self._size)


class ExportHasher:
    """sha256 and size of what ExportWriter writes; with `out`, the bytes go there too.

    Without `out` nothing is kept (the plan); with it (apply) each record is formatted
    once for both the digest and the file.
    """

    def __init__(
        self,
        header: ExportHeader,
        *,
        include_person_ids: bool = True,
        include_services: bool = True,
        out: BinaryIO | None = None,
    ) -> None:
        self._sink = Sha256Sink(out)
        self._writer = ExportWriter(
            self._sink,
            header,
            include_person_ids=include_person_ids,
            include_services=include_services,
        )

    def add(self, recipient: Recipient) -> None:
        self._writer.add(recipient)

    def finish(self) -> ExportDigest:
        written = self._writer.finish()
        return ExportDigest(
            digest=f"sha256:{self._sink.hash.hexdigest()}",
            size=written.size,
            recipients=written.recipients,
        )


def write_export(
    header: ExportHeader,
    recipients: Iterable[Recipient],
    out: BinaryIO | _Sink,
    *,
    include_person_ids: bool = True,
    include_services: bool = True,
    include_names: bool = False,
) -> Written:
    """Write export format v1 as UTF-8 to `out`, one recipient at a time.

    `include_person_ids=False` gives the KPR_IPL part (fagmelding, no PersonId);
    `include_services=False` gives the KPR_IDE part (identmelding: LocalId and
    PersonId only, no services, assessments or other details). `include_names`
    is for the sandbox generator only. `Rehabilitation` is written only when true.
    """
    writer = ExportWriter(
        out,
        header,
        include_person_ids=include_person_ids,
        include_services=include_services,
        include_names=include_names,
    )
    for recipient in recipients:
        writer.add(recipient)
    return writer.finish()


def export_digest(
    header: ExportHeader,
    recipients: Iterable[Recipient],
    *,
    include_person_ids: bool = True,
    include_services: bool = True,
) -> ExportDigest:
    """sha256 of what `write_export` would write, without keeping the bytes."""
    hasher = ExportHasher(
        header, include_person_ids=include_person_ids, include_services=include_services
    )
    for recipient in recipients:
        hasher.add(recipient)
    return hasher.finish()


class Sha256Sink:
    """A write-only file object that feeds sha256, then passes the bytes on to `out` or
    forgets them."""

    def __init__(self, out: BinaryIO | None = None) -> None:
        self.hash = hashlib.sha256()
        self._out = out

    def write(self, data: bytes, /) -> int:
        self.hash.update(data)
        if self._out is not None:
            self._out.write(data)
        return len(data)


def _flush(pieces: list[str], out: BinaryIO | _Sink) -> int:
    data = "".join(pieces).encode("utf-8")
    pieces.clear()
    out.write(data)
    return len(data)


def _header(header: ExportHeader) -> list[str]:
    if not _MUNICIPALITY.fullmatch(header.municipality):
        raise _Bad("municipality must be 4 digits")
    if not 1 <= header.reporting_year <= 9999:
        raise _Bad("reporting year must be a 4-digit year")
    lines = [
        "  <Header>\n",
        f"    <Municipality>{header.municipality}</Municipality>\n",
        f"    <ReportingYear>{header.reporting_year:04d}</ReportingYear>\n",
        f"    <Epj><System>{_string(header.epj_system, 'EPJ system')}</System>"
        f"<Version>{_string(header.epj_version, 'EPJ version')}</Version></Epj>\n",
    ]
    if header.extracted_at is not None:
        lines.append(f"    <ExtractedAt>{_datetime(header.extracted_at)}</ExtractedAt>\n")
    lines.append("  </Header>\n")
    return lines


def _recipient(
    pieces: list[str],
    r: Recipient,
    include_person_ids: bool,
    include_services: bool,
    include_names: bool,
) -> None:
    append = pieces.append
    append(f"  <Recipient>\n    <LocalId>{_string(r.local_id, 'local id')}</LocalId>\n")
    if include_person_ids and r.person_id:
        if not _PERSON_ID.fullmatch(r.person_id):
            raise _Bad("person id must be 11 digits")
        append(f"    <PersonId>{r.person_id}</PersonId>\n")
    if include_names and include_services and r.name:
        append(f"    <Name>{_string(r.name, 'name')}</Name>\n")
    if not include_services:
        append("  </Recipient>\n")
        return
    if r.district is not None:
        if not _DISTRICT.fullmatch(r.district):
            raise _Bad("district must be 2 to 6 digits")
        append(f"    <District>{r.district}</District>\n")
    if r.housing is not None:
        append(f"    <Housing>{_code(r.housing, 'housing code')}</Housing>\n")
    if r.rehabilitation:
        append("    <Rehabilitation>true</Rehabilitation>\n")
    for s in r.services:
        parts = [f'    <Service code="{_code(s.code, "service code")}">']
        if s.start is not None:
            parts.append(f"<From>{s.start.isoformat()}</From>")
        if s.end is not None:
            parts.append(f"<To>{s.end.isoformat()}</To>")
        if s.hours_per_week is not None:
            parts.append(f"<HoursPerWeek>{_hours(s.hours_per_week)}</HoursPerWeek>")
        if s.decision_date is not None:
            parts.append(f"<DecisionDate>{s.decision_date.isoformat()}</DecisionDate>")
        if s.org_number is not None:
            if not _ORG_NUMBER.fullmatch(s.org_number):
                raise _Bad(org_number_problem(s.org_number, "service org number"), s.line)
            parts.append(f"<OrgNumber>{s.org_number}</OrgNumber>")
        parts.append("</Service>\n")
        append("".join(parts))
    for a in r.assessments:
        # Read as `object`: a source plugin may hand a str, which must become this located
        # error, and compiled code would raise TypeError on reading it as the declared int.
        score: object = getattr(a, "score")  # noqa: B009
        if type(score) is not int:
            raise _Bad("assessment score must be an integer")
        date = f' date="{a.date.isoformat()}"' if a.date is not None else ""
        append(
            f'    <Assessment variable="{_code(a.variable, "assessment variable")}" '
            f'score="{score}"{date}/>\n'
        )
    for code in r.diagnoses:
        append(f'    <Diagnosis code="{_attr(_string(code, "diagnosis code", escape=False))}"/>\n')
    append("  </Recipient>\n")


_SEPARATED_ORG_NUMBER = re.compile(r"[0-9]{3}[ .\u00a0]?[0-9]{3}[ .\u00a0]?[0-9]{3}")


def org_number_problem(value: str, what: str) -> str:
    """Why `value` is not an org number, and how to write it; never quotes the value.

    Norwegian documents print org numbers in groups (`123 456 785`); the
    register and the XSD want the nine digits alone.
    """
    if _SEPARATED_ORG_NUMBER.fullmatch(value.strip()):
        return (
            f"{what} is written with spaces or dots: write the 9 digits alone "
            "(123456785, not 123 456 785) in the EPJ or its export"
        )
    return f"{what} must be 9 digits"


def _string(value: str, what: str, *, escape: bool = True) -> str:
    """A NonEmptyString (1–200 characters), escaped for element text."""
    if not value or len(value) > _MAX_STRING:
        raise _Bad(f"{what} must be 1 to {_MAX_STRING} characters")
    if _SPECIAL.search(value) is None:
        return value
    if _ILLEGAL.search(value) is not None:
        raise _Bad(f"{what} contains a control character XML cannot carry")
    return value.translate(_TEXT_ESCAPES) if escape else value


def _attr(value: str) -> str:
    return value if _SPECIAL.search(value) is None else value.translate(_ATTR_ESCAPES)


def _code(value: str, what: str) -> str:
    if value in _GOOD_CODES:  # a few dozen codes, each written a hundred thousand times
        return value
    if not _CODE.fullmatch(value):
        raise _Bad(f"{what} must be 1 to 20 letters, digits, '.', '_' or '-'")
    if len(_GOOD_CODES) < 4096:
        _GOOD_CODES.add(value)
    return value


_GOOD_CODES: set[str] = set()


def _hours(value: float) -> str:
    """At most two decimals (the XSD's fractionDigits), trailing zeros dropped."""
    if not math.isfinite(value) or value < 0:
        raise _Bad("hours per week must be a number of at least 0")
    text = f"{value + 0.0:.2f}".rstrip("0").rstrip(".")  # + 0.0 turns -0.0 into 0.0
    return text or "0"


def _datetime(value: dt.datetime) -> str:
    """xs:dateTime; aware values in UTC with `Z`, naive ones as they are."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None).isoformat() + "Z"
    return value.isoformat()
