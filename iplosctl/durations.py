"""Durations on the command line: `--wait 10m`, `30s`, `1h`, `1h30m`.

Receipts can take a while (DOMAIN.md §5.6: timing is not published), so
`receipts --wait` and `apply --wait` take a human duration rather than a
count of seconds; one parser keeps both commands saying the same thing.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")
#: a day is far beyond what anyone should block a terminal or CI job for
MAX_SECONDS = 24 * 3600


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with a unit (s, m, h), several in a row (`1h30m`), or a
    bare number of seconds. ValueError with the accepted forms for anything else."""
    value = text.strip().lower()
    hint = f"{text!r} is not a duration: use e.g. 30s, 10m, 1h or 1h30m"
    if not value:
        raise ValueError(hint)
    try:
        seconds = float(value)
    except ValueError:
        position, seconds = 0, 0.0
        units_seen: list[str] = []
        for match in _PART.finditer(value):
            if match.start() != position or match.group(2) in units_seen:
                raise ValueError(hint) from None
            units_seen.append(match.group(2))
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(value):
            raise ValueError(hint) from None
    if not 0 <= seconds <= MAX_SECONDS or seconds != seconds:  # also refuses nan
        raise ValueError(f"{text!r} must be between 0s and {MAX_SECONDS // 3600}h")
    return seconds
