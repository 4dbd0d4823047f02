"""Timestamps as the API shows and stores them: ISO 8601 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_ms", "now_iso_ms"]


def iso_ms(value: datetime | None) -> str | None:
    """``2024-01-15T10:30:00.000Z`` for a datetime (naive ones are taken as UTC), ``None`` for ``None``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now_iso_ms() -> str:
    """The current time as ``iso_ms`` renders it."""
    return iso_ms(datetime.now(UTC)) or ""
