from __future__ import annotations

import pytest

from iplosctl.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2m30s", 150),
        ("90", 90),
        ("1.5h", 5400),
        (" 10M ", 600),
        ("0s", 0),
        ("24h", 86400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "10 m", "1h1h", "1h30", "-5", "5s3", "nan"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"30s, 10m, 1h|between 0s and 24h"):
        parse_duration(text)


def test_more_than_a_day_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0s and 24h"):
        parse_duration("25h")
