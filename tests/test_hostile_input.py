"""Hostile input against a real server: never a 5xx, always a JSON error, nothing started or written.

Hypothesis drives plain HTTP requests (http.client, so every byte is ours) at a
``python server.py`` subprocess. After every request the test counts rows in
the database with its own connection: a refused request must leave no run and
no invoice behind.
"""

from __future__ import annotations

import http.client
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from harness import ServerProcess, parse_sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Server:
    process: ServerProcess

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.process.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            # An event stream of an existing run would not end by itself: read only its start.
            data = (
                response.read(4096) if response.getheader("Content-Type", "").startswith("text/event-stream") else response.read()
            )
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def counts(self) -> tuple[int, int]:
        conn = sqlite3.connect(self.process.db)
        try:
            runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            invoices = conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0]
        finally:
            conn.close()
        return int(runs), int(invoices)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server for the module; the (synchronous) tests talk to it while its loop is idle."""
    tmp = tmp_path_factory.mktemp("hostile")
    process = ServerProcess(tmp / "hostile.db", tmp / "server.log")
    await process.start()
    try:
        yield Server(process)
    finally:
        code = await process.stop()
    assert code == 0
    assert "Traceback" not in process.log_text(), process.log_text()


def assert_json_error(status: int, headers: dict[str, str], body: bytes) -> None:
    assert 400 <= status < 500, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), headers
    payload = json.loads(body)
    assert isinstance(payload["error"], str) and payload["error"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
START_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "accountId": JSON_VALUES | st.from_regex(r"[A-Za-z0-9_.\-]{0,70}", fullmatch=True),
        "total": JSON_VALUES | st.integers(-5, 10_005),
        "delay": JSON_VALUES | st.sampled_from(["", "1s", "25h", "-1s", "1 fortnight", "24h", "86400001", "NaN"]),
    },
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "multipart/form-data",
    ]
)
RAW_BODIES = st.binary(max_size=300) | st.text(max_size=200).map(str.encode)


def is_valid_start(body: Any) -> bool:
    """The input rules of the HTTP API (README), written independently of invoices/validation.py."""
    if not isinstance(body, dict):
        return False
    account = body.get("accountId")
    total = body.get("total", 50)
    delay = body.get("delay", "1s")
    if not (isinstance(account, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", account)):
        return False
    if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= 10_000:
        return False
    return isinstance(delay, str) and delay in ("1s", "24h")  # the only valid delays the strategy can produce


@HOSTILE
@given(body=START_FIELDS)
def test_start_refuses_every_invalid_body_and_starts_nothing(server: Server, body: dict[str, Any]) -> None:
    before = server.counts()
    status, headers, data = server.request("POST", "/api/start", json.dumps(body).encode(), {"Content-Type": "application/json"})
    if is_valid_start(body):
        assert status == 200, data
        started = json.loads(data)
        # Stop it again at once: the next example counts rows.
        server.request(
            "POST", "/api/cancel", json.dumps({"runId": started["runId"]}).encode(), {"Content-Type": "application/json"}
        )
        return
    assert_json_error(status, headers, data)
    assert status == 400
    field = json.loads(data)["error"].split(" ")[0]
    assert field in ("accountId", "total", "delay", "Request"), data
    assert server.counts() == before


@HOSTILE
@given(body=RAW_BODIES, content_type=CONTENT_TYPES, path=st.sampled_from(["/api/start", "/api/cancel"]))
def test_post_routes_refuse_arbitrary_bytes(server: Server, body: bytes, content_type: str, path: str) -> None:
    before = server.counts()
    headers = {"Content-Type": content_type} if content_type else {}
    status, response_headers, data = server.request("POST", path, body, headers)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if status == 200:  # only possible for a valid JSON object on the JSON content type
        assert content_type.startswith("application/json") and isinstance(parsed, dict)
        return
    assert_json_error(status, response_headers, data)
    if not content_type.startswith("application/json"):
        assert status == 415
    assert server.counts() == before


RUN_IDS = (
    st.text(max_size=60)
    | st.from_regex(r"wrun_[0-9A-Z]{0,30}", fullmatch=True)
    | st.sampled_from(["..", "../..", "%2e%2e", "wrun_", "' OR 1=1 --", "\x00", "a" * 500])
)


@HOSTILE
@given(run_id=RUN_IDS, route=st.sampled_from(["status", "stream", "detail", "invoices", "csv", "cancel"]))
def test_unknown_run_ids_are_4xx_json_on_every_route(server: Server, run_id: str, route: str) -> None:
    quoted = quote(run_id, safe="")
    before = server.counts()
    if route == "status":
        status, headers, data = server.request("GET", f"/api/status?runId={quoted}")
    elif route == "stream":
        status, headers, data = server.request("GET", f"/api/stream/{quoted}")
    elif route == "detail":
        status, headers, data = server.request("GET", f"/api/runs/{quoted}")
    elif route == "invoices":
        status, headers, data = server.request("GET", f"/api/runs/{quoted}/invoices")
    elif route == "csv":
        status, headers, data = server.request("GET", f"/api/runs/{quoted}/invoices?format=csv")
    else:
        body = json.dumps({"runId": run_id}).encode()
        status, headers, data = server.request("POST", "/api/cancel", body, {"Content-Type": "application/json"})
    assert_json_error(status, headers, data)
    assert status in (400, 404, 405)
    assert server.counts() == before


@HOSTILE
@given(
    query=st.lists(
        st.tuples(st.sampled_from(["status", "limit", "runId", "format", "startIndex", "x"]), st.text(max_size=20)), max_size=4
    )
)
def test_arbitrary_query_strings_never_5xx(server: Server, query: list[tuple[str, str]]) -> None:
    qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)
    for path in ("/api/runs", "/api/status", "/healthz"):
        status, headers, data = server.request("GET", f"{path}?{qs}")
        assert status < 500, (path, qs, data)
        if status >= 400:
            assert_json_error(status, headers, data)


@HOSTILE
@given(path=st.text(max_size=40))
def test_arbitrary_paths_never_5xx_nor_leave_static(server: Server, path: str) -> None:
    status, _, data = server.request("GET", "/" + quote(path, safe="/%.~"))
    assert status < 500
    assert b"[project]" not in data and b"import " not in data[:200]  # no pyproject.toml, no Python source


def test_a_stream_url_never_leaks_another_runs_events(server: Server) -> None:
    runs = []
    for account in ("leak_a", "leak_b"):
        status, _, data = server.request(
            "POST",
            "/api/start",
            json.dumps({"accountId": account, "total": 2, "delay": "0s"}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200
        runs.append(json.loads(data)["runId"])
    a, b = runs
    for run, account in zip(runs, ("leak_a", "leak_b"), strict=True):  # each ends with its run
        status, _, data = server.request("GET", f"/api/stream/{run}")
        assert status == 200
        events = parse_sse(data)
        assert [(event.id, event.data["type"], event.data["accountId"]) for event in events] == [
            (0, "progress", account),
            (1, "progress", account),
            (2, "complete", account),
        ]
    variants = [a.lower(), a + "%20", a + "/", f"{a}/../{b}", f"{a}%2F..%2F{b}", f"{a}{b}", a[:-1], quote(a + "\n" + b, safe="")]
    for variant in variants:  # none of them names a run: a JSON 404, no event of either run
        status, headers, data = server.request("GET", f"/api/stream/{variant}")
        assert status == 404, (variant, data)
        assert_json_error(status, headers, data)
        assert b"leak_" not in data, variant
