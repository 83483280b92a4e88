"""The submission summary, shaped like the register's own daily view (DOMAIN.md §1.4).

Users per service code, long-term stays and home-dwelling users at 31.12,
the share with a complete functional assessment, welfare technology,
rehabilitation and excluded test persons. Counted while the export streams;
stored and printed with small counts suppressed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from typing import Any

from iplosctl.privacy import count_text, suppressed
from iplosctl.profiles import Profile
from iplosctl.records import Recipient

#: services that mean the person lives in or stays at an institution (not home-dwelling)
INSTITUTION_CODES = frozenset({"8", "18", "19", "20", "21", "22", "25"})
LONG_TERM_CODE = "21"


class SummaryBuilder:
    """Counts over included recipients, plus the number of excluded test persons."""

    def __init__(self, profile: Profile, year: int) -> None:
        self._profile = profile
        self._year_end = dt.date(year, 12, 31)
        self._variables = frozenset(profile.assessment_variables)
        self.recipients = 0
        self.per_code: Counter[str] = Counter()
        self.long_term = 0
        self.home_dwelling = 0
        self.assessed = 0
        self.welfare_technology = 0
        self.rehabilitation = 0
        self.excluded = 0

    def _active_at_year_end(self, start: dt.date | None, end: dt.date | None) -> bool:
        return (start is None or start <= self._year_end) and (end is None or end >= self._year_end)

    def add(self, record: Recipient) -> None:
        self.recipients += 1
        codes = {s.code for s in record.services}
        self.per_code.update(codes)
        active = {s.code for s in record.services if self._active_at_year_end(s.start, s.end)}
        if LONG_TERM_CODE in active:
            self.long_term += 1
        if active and not (active & INSTITUTION_CODES):
            self.home_dwelling += 1
        if self._variables and self._variables <= {a.variable for a in record.assessments}:
            self.assessed += 1
        if codes & self._profile.welfare_technology_codes:
            self.welfare_technology += 1
        if record.rehabilitation:
            self.rehabilitation += 1

    def exclude(self) -> None:
        self.excluded += 1

    def build(self) -> dict[str, Any]:
        """The stored form: counts of 1–4 as '<5', the assessed share as a percentage."""
        share = round(100 * self.assessed / self.recipients) if self.recipients else 0
        return {
            "recipients": suppressed(self.recipients),
            "perServiceCode": {
                code: suppressed(n)
                for code, n in sorted(
                    self.per_code.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 999
                )
            },
            "longTermStays": suppressed(self.long_term),
            "homeDwelling": suppressed(self.home_dwelling),
            # A share of fewer than five persons is not shown at all; "<5" would read as a
            # count, and 100 % of three persons identifies them as well as "3" would.
            "assessedPercent": share if self.recipients >= 5 else None,
            "welfareTechnology": suppressed(self.welfare_technology),
            "rehabilitation": suppressed(self.rehabilitation),
            "testPersonsExcluded": suppressed(self.excluded),
        }


LABELS = {
    "recipients": "recipients",
    "longTermStays": "long-term stays (21) at 31.12",
    "homeDwelling": "home-dwelling recipients at 31.12",
    "assessedPercent": "with a complete assessment (%)",
    "welfareTechnology": "with welfare technology",
    "rehabilitation": "with rehabilitation outside institution",
    "testPersonsExcluded": "test persons excluded",
}


def _delta(now: object, before: object) -> str:
    if now is None or before is None:
        return ""
    if isinstance(now, int) and isinstance(before, int):
        diff = now - before
        return "±0" if diff == 0 else f"{diff:+d}"
    return f"was {before}" if now != before else "±0"


def _shown(value: object) -> str:
    """A summary value as printed; a share that is not shown says why."""
    return "not shown (<5 recipients)" if value is None else str(value)


def summary_rows(
    summary: Mapping[str, Any], previous: Mapping[str, Any] | None, profile: Profile
) -> list[tuple[str, str, str]]:
    """(label, value, change since the last accepted submission) rows for rendering."""
    prev = previous or {}
    rows = [
        (label, _shown(summary.get(key, 0)), _delta(summary.get(key), prev.get(key)))
        for key, label in LABELS.items()
    ]
    prev_codes = prev.get("perServiceCode", {}) if previous else None
    for code, value in summary.get("perServiceCode", {}).items():
        name = profile.service_codes[code].name if code in profile.service_codes else "unknown"
        before = prev_codes.get(code, 0) if prev_codes is not None else None
        rows.append((f"code {code} {name}", str(value), _delta(value, before)))
    return rows


__all__ = ["LABELS", "SummaryBuilder", "count_text", "summary_rows"]
