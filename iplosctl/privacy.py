"""Small-number suppression for anything printed, saved or pasted (DESIGN.md §5).

Aggregates of 1–4 persons print as `<5`; zero stays 0, because "no recipient
has welfare technology" is exactly what a reviewer must see and identifies
nobody.
"""

from __future__ import annotations

SUPPRESS_BELOW = 5


def count_text(n: int) -> str:
    """`3` → `<5`, `0` → `0`, `12` → `12`."""
    return f"<{SUPPRESS_BELOW}" if 0 < n < SUPPRESS_BELOW else str(n)


def suppressed(n: int) -> int | str:
    """The JSON form: an int, or the string `<5`."""
    return count_text(n) if 0 < n < SUPPRESS_BELOW else n
