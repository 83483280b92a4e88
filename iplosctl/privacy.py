"""What may leave the machine: small-number suppression and the one scrubber (DESIGN.md §5).

Aggregates of 1–4 persons print as `<5`; zero stays 0, because "no recipient
has welfare technology" is exactly what a reviewer must see and identifies
nobody.

`scrub` is the one scrubber for free text that comes from outside (AppRec
`DN`/`OT`, error-queue descriptions, broker and TLS error strings, export
values quoted by a parser): everything shaped like a person id goes before the
text is stored or printed, whatever separator the sender used.
"""

from __future__ import annotations

import re

SUPPRESS_BELOW = 5

# Eleven digits, as written or split after the birth date by a space, '.', '-' or '/'
# (`010180 12345`, `010180.12345`); never part of a longer number.
_PERSON_ID = re.compile(r"(?<!\d)\d{6}[ .\-/]?\d{5}(?!\d)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")


def count_text(n: int) -> str:
    """`3` → `<5`, `0` → `0`, `12` → `12`."""
    return f"<{SUPPRESS_BELOW}" if 0 < n < SUPPRESS_BELOW else str(n)


def suppressed(n: int) -> int | str:
    """The JSON form: an int, or the string `<5`."""
    return count_text(n) if 0 < n < SUPPRESS_BELOW else n


def scrub(text: str) -> str:
    """`text` with anything shaped like a person id replaced by `[id]`, control characters
    (other than tab and newline) replaced by a space."""
    return _CONTROL.sub(" ", _PERSON_ID.sub("[id]", text))
