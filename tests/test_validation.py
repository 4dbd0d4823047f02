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


REVIEW_RULE = "reviewFirst must be an integer from 0 to 100"
APPROVAL_RULE = 'approvalTimeout must be a duration string above "0s" and up to "7 days" (e.g. "200ms", "30m", "24h")'


def test_review_fields_default_to_no_review_and_a_day() -> None:
    request = validate_start({"accountId": "a"})
    assert (request.review_first, request.approval_timeout) == (0, "24h")


@pytest.mark.parametrize(
    ("body", "review_first", "approval_timeout"),
    [
        ({"total": 100, "reviewFirst": 100, "approvalTimeout": "7 days"}, 100, "7 days"),
        ({"total": 5, "reviewFirst": 5, "approvalTimeout": "200ms"}, 5, "200ms"),
        ({"total": 5, "reviewFirst": 0, "approvalTimeout": "168h"}, 0, "168h"),
        ({"reviewFirst": 3, "approvalTimeout": "1"}, 3, "1"),  # a bare number string is milliseconds
    ],
)
def test_review_fields_within_their_bounds(body: dict[str, Any], review_first: int, approval_timeout: str) -> None:
    request = validate_start({"accountId": "a", **body})
    assert (request.review_first, request.approval_timeout) == (review_first, approval_timeout)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reviewFirst": -1}, f"{REVIEW_RULE}, got -1"),
        ({"reviewFirst": 101, "total": 500}, f"{REVIEW_RULE}, got 101"),
        ({"reviewFirst": 2.0}, f"{REVIEW_RULE}, got 2.0"),
        ({"reviewFirst": "2"}, f"{REVIEW_RULE}, got '2'"),
        ({"reviewFirst": True}, f"{REVIEW_RULE}, got true"),
        ({"reviewFirst": None}, f"{REVIEW_RULE}, got null"),
        (
            {"reviewFirst": 6, "total": 5},
            "reviewFirst must be at most total (5): a batch reviews only invoices it issues, got 6",
        ),
        ({"approvalTimeout": "0s"}, f"{APPROVAL_RULE}, got '0s'"),
        ({"approvalTimeout": "0"}, f"{APPROVAL_RULE}, got '0'"),
        ({"approvalTimeout": "8 days"}, f"{APPROVAL_RULE}, got '8 days'"),
        ({"approvalTimeout": "169h"}, f"{APPROVAL_RULE}, got '169h'"),
        ({"approvalTimeout": 3600}, f"{APPROVAL_RULE}, got 3600"),
        ({"approvalTimeout": ""}, f"{APPROVAL_RULE}, got ''"),
        ({"approvalTimeout": None}, f"{APPROVAL_RULE}, got null"),
        # Checked without a review too: a body is valid or not whatever the other fields say.
        ({"reviewFirst": 0, "approvalTimeout": "forever"}, f"{APPROVAL_RULE}, got 'forever': "),
    ],
)
def test_review_field_rejections_name_the_field_and_rule(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_start({"accountId": "a", **body})
    assert str(caught.value).startswith(message) if message.endswith(": ") else str(caught.value) == message
