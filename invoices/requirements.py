"""What the service needs of the SQLite library, checked before it opens its database."""

from __future__ import annotations

import sqlite3

__all__ = ["MIN_SQLITE", "json_available", "require_sqlite", "sqlite_shortfall"]

# The oldest SQLite the store's statements run on: a number is taken by an UPSERT
# with RETURNING, whose row carries the stored invoice as json_array(...) of a
# subquery. RETURNING came in 3.35.0; 3.35.4 fixed defects in it.
MIN_SQLITE = (3, 35, 4)


def sqlite_shortfall(version: tuple[int, int, int], has_json: bool) -> str | None:
    """What this SQLite lacks for the store, or ``None`` when it has everything."""
    found = _dotted(version)
    if version < MIN_SQLITE:
        return (
            f"the invoices need SQLite {_dotted(MIN_SQLITE)} or later (RETURNING);"
            f" this Python's sqlite3 module uses SQLite {found}"
        )
    if not has_json:
        return f"the invoices need SQLite's JSON functions (json_array); this Python's SQLite {found} was built without them"
    return None


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def json_available(conn: sqlite3.Connection) -> bool:
    """Whether ``conn``'s SQLite has the JSON functions (found by calling one, whatever the build says)."""
    try:
        conn.execute("SELECT json_array(1)").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such function" not in str(exc):
            raise
        return False
    return True


def require_sqlite() -> None:
    """Refuse to start on an SQLite that would fail the first batch, before the database is opened.

    An in-memory connection of this Python's sqlite3 module: the library the engine uses.
    """
    probe = sqlite3.connect(":memory:")
    try:
        shortfall = sqlite_shortfall(sqlite3.sqlite_version_info, json_available(probe))
    finally:
        probe.close()
    if shortfall is not None:
        raise sqlite3.NotSupportedError(f"{shortfall}: run the service with a Python built against a newer SQLite")
