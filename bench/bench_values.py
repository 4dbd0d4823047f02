"""Value encoding benchmark: prints one JSON line of nanoseconds per call.

    python bench/bench_values.py [--quick]

For each value, ``<name>_encode_ns`` / ``<name>_decode_ns`` time ``durable._values.encode``
and ``decode``, next to ``<name>_orjson_dumps_ns`` / ``_loads_ns`` for bare orjson:

- ``small_dict``: a step result, a five-key dict of str and int (plain JSON).
- ``call``: a step's ``[args, kwargs]``, three scalar args and no kwargs (plain JSON), both
  through ``encode([list(args), kwargs])`` and through ``encode_call(args, kwargs)``
  (``call_encode_call_ns`` / ``call_decode_call_ns``).
- ``typed``: a dict holding a datetime, a Decimal and a tuple (tagged). Its orjson figures
  are ``orjson.dumps(value, default=str)``, which orjson can write but not read back as the
  same types: the cost of the same shape without the types.

Each figure is the best of 21 interleaved rounds of 50,000 calls (``--quick``: 3 of 10,000).
Every figure includes the ~30-50 ns of the lambda that the timer calls.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from durable._values import decode, decode_call, encode, encode_call

SMALL_DICT = {
    "invoiceId": "INV-acct_1-0001",
    "customer": "Acme",
    "currency": "EUR",
    "totalCents": 12345,
    "issuedAt": "2026-03-01T10:00:00.000Z",
}
ARGS = ("acct_1", 42, "EUR")
KWARGS: dict[str, Any] = {}
TYPED = {
    "issuedAt": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
    "total": Decimal("123.45"),
    "period": (2026, 3),
}


def best_ns(timers: dict[str, Any], number: int, rounds: int) -> dict[str, float]:
    """Nanoseconds per call of each timer, the best of ``rounds``; the timers take turns in every
    round so that a neighbour's burst on a shared machine hits them alike."""
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(rounds):
        for name, fn in timers.items():
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number * 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    number, rounds = (10_000, 3) if options.quick else (50_000, 21)

    call = [list(ARGS), KWARGS]
    cases: dict[str, tuple[Any, Any, Any]] = {
        "small_dict": (SMALL_DICT, orjson.dumps, orjson.loads),
        "call": (call, orjson.dumps, orjson.loads),
        "typed": (TYPED, lambda v: orjson.dumps(v, default=str), orjson.loads),
    }
    timers: dict[str, Any] = {}
    for name, (value, dumps, loads) in cases.items():
        stored, plain = encode(value), dumps(value)
        assert type(decode(stored)) is type(value)
        timers[f"{name}_encode_ns"] = lambda v=value: encode(v)
        timers[f"{name}_orjson_dumps_ns"] = lambda v=value, d=dumps: d(v)
        timers[f"{name}_decode_ns"] = lambda b=stored: decode(b)
        timers[f"{name}_orjson_loads_ns"] = lambda b=plain, f=loads: f(b)
    stored_call = encode_call(ARGS, KWARGS)
    assert stored_call == orjson.dumps(call)
    timers["call_encode_call_ns"] = lambda: encode_call(ARGS, KWARGS)
    timers["call_decode_call_ns"] = lambda: decode_call(stored_call)
    figures = best_ns(timers, number, rounds)
    print(orjson.dumps({key: round(ns) for key, ns in figures.items()}).decode())


if __name__ == "__main__":
    main()
