from __future__ import annotations

from typing import Any

import pytest

from invoices.validation import StartRequest, ValidationError, validate_start


def test_defaults() -> None:
    assert validate_start({"accountId": "acct_1"}) == StartRequest("acct_1", 50, "1s", 1.0)


def test_all_fields_and_extra_fields_ignored() -> None:
    body = {"accountId": "A.b-c_9", "total": 10000, "delay": "500ms", "note": "ignored", "x": [1]}
    assert validate_start(body) == StartRequest("A.b-c_9", 10000, "500ms", 0.5)


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("0s", 0.0), ("0", 0.0), ("200ms", 0.2), ("1.5h", 5400.0), ("24h", 86400.0), ("5m", 300.0), ("250", 0.25)],
)
def test_delay_accepts_durations_up_to_24_hours(delay: str, seconds: float) -> None:
    assert validate_start({"accountId": "a", "delay": delay}).delay_seconds == pytest.approx(seconds)


def test_account_id_bounds() -> None:
    assert validate_start({"accountId": "x" * 64}).account_id == "x" * 64
    assert validate_start({"accountId": "7"}).account_id == "7"


ACCOUNT_RULE = "accountId must be a string of 1 to 64 characters from A-Z a-z 0-9 _ . -"
TOTAL_RULE = "total must be an integer from 1 to 10000"
DELAY_RULE = 'delay must be a duration string from "0s" to "24h" (e.g. "500ms", "1s", "5m")'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "request body must be a JSON object, got an array"),
        ("acct", "request body must be a JSON object, got 'acct'"),
        (None, "request body must be a JSON object, got null"),
        ({}, "accountId is required"),
        ({"total": 5}, "accountId is required"),
        ({"accountId": ""}, f"{ACCOUNT_RULE}, got ''"),
        ({"accountId": "x" * 65}, f"{ACCOUNT_RULE}, got '{'x' * 40}...'"),
        ({"accountId": "a b"}, f"{ACCOUNT_RULE}, got 'a b'"),
        ({"accountId": "a/b"}, f"{ACCOUNT_RULE}, got 'a/b'"),
        ({"accountId": "é"}, f"{ACCOUNT_RULE}, got 'é'"),
        ({"accountId": "a\n"}, f"{ACCOUNT_RULE}, got 'a\\n'"),
        ({"accountId": 12}, f"{ACCOUNT_RULE}, got 12"),
        ({"accountId": None}, f"{ACCOUNT_RULE}, got null"),
        ({"accountId": "a", "total": 0}, f"{TOTAL_RULE}, got 0"),
        ({"accountId": "a", "total": -3}, f"{TOTAL_RULE}, got -3"),
        ({"accountId": "a", "total": 10001}, f"{TOTAL_RULE}, got 10001"),
        ({"accountId": "a", "total": True}, f"{TOTAL_RULE}, got true"),
        ({"accountId": "a", "total": 5.0}, f"{TOTAL_RULE}, got 5.0"),
        ({"accountId": "a", "total": "5"}, f"{TOTAL_RULE}, got '5'"),
        ({"accountId": "a", "total": None}, f"{TOTAL_RULE}, got null"),
        ({"accountId": "a", "total": {}}, f"{TOTAL_RULE}, got an object"),
        ({"accountId": "a", "delay": 1000}, f"{DELAY_RULE}, got 1000"),
        ({"accountId": "a", "delay": ""}, f"{DELAY_RULE}, got ''"),
        ({"accountId": "a", "delay": "25h"}, f"{DELAY_RULE}, got '25h'"),
        ({"accountId": "a", "delay": "x" * 33}, f"{DELAY_RULE}, got '{'x' * 33}'"),
        ({"accountId": "a", "delay": None}, f"{DELAY_RULE}, got null"),
    ],
)
def test_rejections_name_the_field_and_rule(body: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_start(body)
    assert str(caught.value) == message


@pytest.mark.parametrize("delay", ["soon", "-1s", "1 fortnight", "inf", "nan", "1e400s", "s"])
def test_unparseable_or_negative_delays(delay: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_start({"accountId": "a", "delay": delay})
    assert str(caught.value).startswith(f"{DELAY_RULE}, got {delay!r}")


def test_first_bad_field_is_reported() -> None:
    with pytest.raises(ValidationError, match=r"^accountId"):
        validate_start({"accountId": "", "total": 0, "delay": "x"})
