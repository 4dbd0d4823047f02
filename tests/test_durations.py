from __future__ import annotations

from datetime import timedelta

import pytest

from durable import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1s", 1.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7 days", 604800.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("250", 0.25),
        ("3 minutes", 180.0),
        ("1w", 604800.0),
        (timedelta(minutes=2), 120.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | int | float | timedelta, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "-1s", "1 fortnight", "1s2", -1, True, float("nan"), float("inf")])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]
