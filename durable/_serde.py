"""Durations: parsing "500ms" / "1s" / "7 days", and wake times."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 604800.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")

Duration = str | int | float | timedelta


_INVALID = "Invalid duration {!r}: expected a string like '1s', seconds or a timedelta"


def _seconds_in_text(value: str) -> float:
    match = _DURATION.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in _UNITS):
        raise ValueError(
            f"Invalid duration {value!r}: expected a number and a unit such as '500ms', '1s', '5m', '2h' or '7 days'"
        )
    return float(match.group(1)) * (_UNITS[unit] if unit else 0.001)


def _seconds_in(value: Duration) -> float:
    if isinstance(value, bool):
        raise ValueError(_INVALID.format(value))
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return _seconds_in_text(value)
    raise ValueError(_INVALID.format(value))


def parse_duration(value: Duration) -> float:
    """Seconds in ``value``: "500ms", "1s", "5m", "2h", "7 days", a timedelta, or seconds.

    A bare number in a string counts milliseconds, as in the ``ms`` package.
    """
    seconds = _seconds_in(value)
    if not math.isfinite(seconds):
        raise ValueError(f"Invalid duration {value!r}: must be finite")
    if seconds < 0:
        raise ValueError(f"Invalid duration {value!r}: must not be negative")
    return seconds


def wake_time(until: Duration | datetime, now: float) -> float:
    """The epoch time at which a sleep of ``until`` started at ``now`` ends."""
    if isinstance(until, datetime):
        moment = until if until.tzinfo is not None else until.replace(tzinfo=UTC)
        return max(moment.timestamp(), now)
    return now + parse_duration(until)


def to_datetime(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)
