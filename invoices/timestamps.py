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
    return _rendered(value.astimezone(UTC))


def now_iso_ms() -> str:
    """The current time as ``iso_ms`` renders it."""
    return _rendered(datetime.now(UTC))


def _rendered(utc: datetime) -> str:
    # isoformat is about 3x cheaper than strftime, and a batch stamps thousands of invoices
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
