"""The neutral record model every source plugin produces (pure data).

Person ids and names are held only to build the payload and to detect test
users; `repr` never shows them, so a record that ends up in a log or a
traceback carries no personal data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExportHeader:
    """What the EPJ says about the export as a whole."""

    municipality: str
    reporting_year: int
    epj_system: str
    epj_version: str
    extracted_at: dt.datetime | None = None


@dataclass(frozen=True)
class Service:
    """One tjeneste (kodeverk 9151) of a recipient."""

    code: str
    start: dt.date | None = None
    end: dt.date | None = None
    hours_per_week: float | None = None
    decision_date: dt.date | None = None
    org_number: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Assessment:
    """One functional assessment (score 1–5 or 9) of a variable of the profile's list."""

    variable: str
    score: int
    date: dt.date | None = None


def record_number(index: int) -> int:
    """The number users read for the record at 0-based position `index`: 1-based, counted
    like the line numbers beside it (issue 13, item 12: "record 0 (line 10)" confused).

    Sources and rules keep `Recipient.index` 0-based (the plugin contract); every message,
    finding and error that names a record shows this number instead, so "record 1" is
    the first record of the export in every output and every source.
    """
    return index + 1


@dataclass(frozen=True)
class Recipient:
    """One tjenestemottaker. `index` is the 0-based position in the export; what users
    see is `record_number(index)`, 1-based."""

    index: int
    local_id: str = field(repr=False)
    person_id: str = field(repr=False)
    name: str | None = field(default=None, repr=False)
    district: str | None = None
    housing: str | None = None
    rehabilitation: bool = False
    services: tuple[Service, ...] = ()
    assessments: tuple[Assessment, ...] = ()
    diagnoses: tuple[str, ...] = field(default=(), repr=False)
    line: int | None = None
