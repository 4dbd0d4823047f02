"""Input rules for starting a batch (DESIGN.md section 4).

Decisions the design leaves open, made here:

- ``total`` must be a JSON integer: ``true`` is not an integer (Python's
  ``bool`` is an ``int`` subclass, so it is excluded explicitly), and ``5.0``
  and ``"5"`` are refused too, because JSON tells them apart and a client
  sending them has a bug worth hearing about.
- ``delay`` must be a duration *string* (``"0s"``, ``"500ms"``, ``"1.5h"``, or
  a bare number string meaning milliseconds), parsed by
  ``durable.parse_duration``; ``0`` to ``24h`` inclusive.
- An absent ``total`` or ``delay`` takes its default; an explicit ``null`` is
  an error (it is more likely a bug than a wish for the default).
- Unknown extra fields are ignored, so that older servers accept bodies from
  newer panels; they are never stored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from durable import parse_duration

__all__ = [
    "ACCOUNT_ID_RE",
    "DEFAULT_DELAY",
    "DEFAULT_TOTAL",
    "MAX_DELAY_SECONDS",
    "MAX_TOTAL",
    "StartRequest",
    "ValidationError",
    "validate_start",
]

ACCOUNT_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
DEFAULT_TOTAL = 50
MAX_TOTAL = 10_000
DEFAULT_DELAY = "1s"
MAX_DELAY_SECONDS = 24 * 60 * 60
_MAX_DELAY_TEXT = 32  # longer strings are not durations anyone types; don't parse them

_MISSING = object()


class ValidationError(ValueError):
    """A request field breaks an input rule; the message names the field and the rule."""


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A validated request to start a batch."""

    account_id: str
    total: int
    delay: str
    delay_seconds: float


def _show(value: Any) -> str:
    """A short, safe rendering of a rejected value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "..."
        return repr(text)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _account_id(body: dict[str, Any]) -> str:
    value = body.get("accountId", _MISSING)
    if value is _MISSING:
        raise ValidationError("accountId is required")
    rule = "accountId must be a string of 1 to 64 characters from A-Z a-z 0-9 _ . -"
    if not isinstance(value, str):
        raise ValidationError(f"{rule}, got {_show(value)}")
    if ACCOUNT_ID_RE.fullmatch(value) is None:
        raise ValidationError(f"{rule}, got {_show(value)}")
    return value


def _total(body: dict[str, Any]) -> int:
    value = body.get("total", _MISSING)
    if value is _MISSING:
        return DEFAULT_TOTAL
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOTAL:
        raise ValidationError(f"total must be an integer from 1 to {MAX_TOTAL}, got {_show(value)}")
    return value


def _delay(body: dict[str, Any]) -> tuple[str, float]:
    value = body.get("delay", _MISSING)
    if value is _MISSING:
        return DEFAULT_DELAY, parse_duration(DEFAULT_DELAY)
    rule = 'delay must be a duration string from "0s" to "24h" (e.g. "500ms", "1s", "5m")'
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_DELAY_TEXT:
        raise ValidationError(f"{rule}, got {_show(value)}")
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValidationError(f"{rule}, got {_show(value)}: {exc}") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise ValidationError(f"{rule}, got {_show(value)}")
    return value, seconds


def validate_start(body: Any) -> StartRequest:
    """Check a decoded ``POST /api/start`` body; raise ``ValidationError`` on the first bad field."""
    if not isinstance(body, dict):
        raise ValidationError(f"request body must be a JSON object, got {_show(body)}")
    account_id = _account_id(body)
    total = _total(body)
    delay, seconds = _delay(body)
    return StartRequest(account_id=account_id, total=total, delay=delay, delay_seconds=seconds)
