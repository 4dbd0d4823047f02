"""Many rows of one single-row INSERT as a few multi-row INSERTs.

``executemany`` steps its statement once per row, and the sqlite3 module lets go
of the GIL around every step; while the event loop holds the GIL, each step waits
to get it back. One statement for many rows takes it once. The writer uses this
for a group of identical INSERTs in a batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

MAX_ROWS = 256  # rows per statement, at most: a bigger statement saves no more GIL hand-offs worth having

# ``INSERT [OR ...] INTO name [(columns)] VALUES (?, ..., ?)`` and nothing else: a VALUES
# that ends a compound SELECT (``INSERT INTO t SELECT ... UNION ALL VALUES (?)``) must not
# take more rows (the SELECT's rows would be inserted once, not once per write), and
# numbered or named parameters do not repeat.
_ONE_ROW_INSERT = re.compile(r"INSERT(?:\s+OR\s+[A-Z]+)?\s+INTO\s+[\w.\"`\[\]]+\s*(?:\([^()]*\))? VALUES (\(\?(?:,\s*\?)*\))")


class MultiRow:
    """The multi-row forms of one single-row INSERT, in sizes that are powers of two
    (a handful of statement texts, which stay in the connection's statement cache)."""

    @classmethod
    def of(cls, sql: str, max_params: int) -> MultiRow | None:
        """The multi-row forms of ``sql``, or ``None`` when it is not a plain single-row INSERT.

        ``max_params`` is the connection's limit on a statement's parameters
        (``SQLITE_LIMIT_VARIABLE_NUMBER``): 32,766 by default from SQLite 3.32,
        999 before, and whatever a build chose.
        """
        match = _ONE_ROW_INSERT.fullmatch(sql)
        return None if match is None else cls(sql, match.group(1), max_params)

    def __init__(self, sql: str, placeholders: str, max_params: int) -> None:
        self._sql = sql
        self._more = ", " + placeholders
        self._width = placeholders.count("?")
        rows = max(1, min(MAX_ROWS, max_params // max(self._width, 1)))
        self._max_rows = 1 << (rows.bit_length() - 1)  # sizes stay powers of two
        self._texts: dict[int, str] = {1: sql}

    def fits(self, rows: Sequence[Sequence[Any] | Mapping[str, Any]]) -> TypeGuard[Sequence[Sequence[Any]]]:
        """Whether every row is a tuple or list with one value per placeholder.

        Flattened, any other row (a dict, a value too few or too many) would bind to
        its neighbours' placeholders and store wrong rows, where ``executemany``
        refuses it and the write fails alone.
        """
        width = self._width
        return all(isinstance(row, (tuple, list)) and len(row) == width for row in rows)

    def chunks(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
        """``(sql, parameters)`` statements that insert ``rows``, in their order."""
        out = []
        start = 0
        while start < len(rows):
            size = min(self._max_rows, 1 << ((len(rows) - start).bit_length() - 1))
            out.append((self._text(size), [value for row in rows[start : start + size] for value in row]))
            start += size
        return out

    def _text(self, size: int) -> str:
        text = self._texts.get(size)
        if text is None:
            text = self._texts[size] = self._sql + self._more * (size - 1)
        return text
