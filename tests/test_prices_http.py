"""Price lists, price versions of batches and invoices, and per-account numbering, over HTTP.

A real aiohttp server on 127.0.0.1 and a real SQLite file per test, as in
``test_http.py``; what is stored is checked with a plain sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from app_client import JSON, AppClient, serving
from hypothesis import given, settings
from hypothesis import strategies as st

from invoices.pricing import CATALOG, PriceList, Product, price_invoice
from invoices.validation import ValidationError, validate_prices

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SEED_PRODUCTS = [{"sku": p.sku, "description": p.description, "unitPriceCents": p.unit_price_cents} for p in CATALOG]


class Api(AppClient):
    async def put_prices(self, body: Any, status: int = 200) -> Any:
        return await self.json("PUT", "/api/prices", body, status)

    async def start(self, account_id: str, total: int, delay: str = "0s") -> dict[str, Any]:
        started: dict[str, Any] = await self.json("POST", "/api/start", {"accountId": account_id, "total": total, "delay": delay})
        return started

    async def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's whole stream (it ends when the run ends)."""
        response = await self.client.get(f"/api/stream/{run_id}")
        assert response.status == 200
        text = (await response.read()).decode()
        return [orjson.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]

    async def invoices(self, run_id: str) -> list[dict[str, Any]]:
        body = await self.json("GET", f"/api/runs/{run_id}/invoices")
        assert body["count"] == len(body["invoices"])
        invoices: list[dict[str, Any]] = body["invoices"]
        return invoices


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(Api, tmp_path / "invoices.db") as instance:
        yield instance


def ids(account_id: str, numbers: range) -> list[str]:
    return [f"INV-{account_id}-{n:04d}" for n in numbers]


def raised(products: list[dict[str, Any]], cents: int) -> list[dict[str, Any]]:
    return [{**product, "unitPriceCents": product["unitPriceCents"] + cents} for product in products]


def as_price_list(body: dict[str, Any]) -> PriceList:
    products = tuple(Product(p["sku"], p["description"], p["unitPriceCents"]) for p in body["products"])
    return PriceList(body["version"], body["currency"], body["taxBasisPoints"], products, body["updatedAt"])


def expected_invoice(account_id: str, n: int, run_id: str, prices: PriceList) -> dict[str, Any]:
    draft = price_invoice(account_id, n, prices)
    return {
        "invoiceId": f"INV-{account_id}-{n:04d}",
        "runId": run_id,
        "accountId": account_id,
        "n": n,
        "customer": draft.customer,
        "priceVersion": prices.version,
        "lineItems": [item.to_json() for item in draft.items],
        "currency": "USD",
        "subtotalCents": draft.subtotal_cents,
        "taxCents": draft.tax_cents,
        "totalCents": draft.total_cents,
        "status": "issued",
        "voidedBy": None,
        "replaces": None,
    }


def without_issued_at(invoice: dict[str, Any]) -> dict[str, Any]:
    assert ISO_MS.fullmatch(invoice["issuedAt"]), invoice["issuedAt"]
    return {key: value for key, value in invoice.items() if key != "issuedAt"}


# -- GET and PUT /api/prices ---------------------------------------------------------------------


async def test_the_first_start_seeds_version_1_from_the_catalog(api: Api) -> None:
    body = await api.json("GET", "/api/prices")
    assert list(body) == ["version", "currency", "taxBasisPoints", "products", "updatedAt"]
    assert body == {**body, "version": 1, "currency": "USD", "taxBasisPoints": 825, "products": SEED_PRODUCTS}
    assert ISO_MS.fullmatch(body["updatedAt"])
    assert await api.json("GET", "/api/prices?version=1") == body
    assert api.rows("SELECT version FROM price_lists") == [(1,)]


async def test_put_stores_the_next_version_and_old_versions_stay_readable(api: Api) -> None:
    seed = await api.json("GET", "/api/prices")
    second = await api.put_prices({"products": raised(SEED_PRODUCTS, 100), "taxBasisPoints": 1000, "baseVersion": 1})
    assert second == {
        "version": 2,
        "currency": "USD",
        "taxBasisPoints": 1000,
        "products": raised(SEED_PRODUCTS, 100),
        "updatedAt": second["updatedAt"],
    }
    assert ISO_MS.fullmatch(second["updatedAt"]) and second["updatedAt"] >= seed["updatedAt"]
    assert await api.json("GET", "/api/prices") == second
    # Without taxBasisPoints the rate carries over; without baseVersion the list is simply the next one.
    third = await api.put_prices({"products": SEED_PRODUCTS[::-1]})
    assert (third["version"], third["taxBasisPoints"], third["products"]) == (3, 1000, SEED_PRODUCTS[::-1])
    fourth = await api.put_prices({"products": SEED_PRODUCTS, "taxBasisPoints": 0, "baseVersion": 3})
    assert (fourth["version"], fourth["taxBasisPoints"]) == (4, 0)

    assert await api.json("GET", "/api/prices?version=1") == seed
    assert await api.json("GET", "/api/prices?version=2") == second
    assert await api.json("GET", "/api/prices?version=3") == third
    assert await api.json("GET", "/api/prices") == fourth
    assert api.rows("SELECT version, tax_basis_points FROM price_lists ORDER BY version") == [
        (1, 825),
        (2, 1000),
        (3, 1000),
        (4, 0),
    ]


async def test_get_of_an_unknown_or_malformed_version(api: Api) -> None:
    assert await api.json("GET", "/api/prices?version=2", status=404) == {
        "error": "Price list version 2 not found: the versions are 1 to 1"
    }
    for raw in ("0", "abc", "-1", "1.5", "99999999999999999"):
        body = await api.json("GET", f"/api/prices?version={raw}", status=400)
        assert body == {"error": f"version must be an integer of at least 1, got {raw!r}"}


async def test_a_stale_base_version_is_409_and_stores_nothing(api: Api) -> None:
    await api.put_prices({"products": raised(SEED_PRODUCTS, 1), "baseVersion": 1})
    for base in (1, 3, 99):
        body = await api.put_prices({"products": raised(SEED_PRODUCTS, 7), "baseVersion": base}, status=409)
        assert body == {
            "error": f"baseVersion {base} is not the latest price list version (2): the list changed meanwhile;"
            " load the latest version and apply your change to it",
            "currentVersion": 2,
        }
    assert api.rows("SELECT version FROM price_lists ORDER BY version") == [(1,), (2,)]
    assert (await api.json("GET", "/api/prices"))["products"] == raised(SEED_PRODUCTS, 1)


async def test_two_edits_of_the_same_version_at_once_store_exactly_one(api: Api) -> None:
    responses = await asyncio.gather(
        *(api.send("PUT", "/api/prices", {"products": raised(SEED_PRODUCTS, cents), "baseVersion": 1}) for cents in (1, 2, 3))
    )
    assert sorted(response.status for response in responses) == [200, 409, 409]
    [winner] = [await response.json() for response in responses if response.status == 200]
    assert winner["version"] == 2
    assert await api.json("GET", "/api/prices") == winner
    assert api.rows("SELECT version FROM price_lists ORDER BY version") == [(1,), (2,)]


def _with_product(index: int, **change: Any) -> dict[str, Any]:
    products = [dict(product) for product in SEED_PRODUCTS]
    products[index].update(change)
    return {"products": products}


def _without(index: int, name: str) -> dict[str, Any]:
    body = _with_product(index)
    del body["products"][index][name]
    return body


BAD_PUTS: list[tuple[Any, str]] = [
    ({}, "products is required: a list of {sku, description, unitPriceCents}"),
    ({"products": []}, "products must be a list of 1 to 200 products, got 0 products"),
    ({"products": {}}, "products must be a list of 1 to 200 products, got an object"),
    ({"products": "all"}, "products must be a list of 1 to 200 products, got 'all'"),
    (
        {"products": SEED_PRODUCTS + [{"sku": f"X{i}", "description": "x", "unitPriceCents": 1} for i in range(191)]},
        "products must be a list of 1 to 200 products, got 201 products",
    ),
    (
        {"products": SEED_PRODUCTS, "currency": "EUR"},
        "unknown field 'currency': the body takes products, taxBasisPoints and baseVersion",
    ),
    (
        {"products": SEED_PRODUCTS, "version": 2},
        "unknown field 'version': the body takes products, taxBasisPoints and baseVersion",
    ),
    (
        {"products": [*SEED_PRODUCTS[:2], 5, *SEED_PRODUCTS[2:]]},
        "products[2] must be an object with sku, description and unitPriceCents, got 5",
    ),
    (
        _with_product(2, price=5),
        "products[2] has an unknown field 'price': a product has sku, description and unitPriceCents",
    ),
    (_without(2, "description"), "products[2].description is required"),
    (_without(0, "sku"), "products[0].sku is required"),
    (_without(9, "unitPriceCents"), "products[9].unitPriceCents is required"),
    (_with_product(2, unitPriceCents=-5), "products[2].unitPriceCents must be an integer from 0 to 100000000, got -5"),
    (
        _with_product(2, unitPriceCents=100_000_001),
        "products[2].unitPriceCents must be an integer from 0 to 100000000, got 100000001",
    ),
    (_with_product(4, unitPriceCents=9.99), "products[4].unitPriceCents must be an integer from 0 to 100000000, got 9.99"),
    (_with_product(4, unitPriceCents=5.0), "products[4].unitPriceCents must be an integer from 0 to 100000000, got 5.0"),
    (_with_product(4, unitPriceCents="999"), "products[4].unitPriceCents must be an integer from 0 to 100000000, got '999'"),
    (_with_product(4, unitPriceCents=True), "products[4].unitPriceCents must be an integer from 0 to 100000000, got true"),
    (_with_product(4, unitPriceCents=None), "products[4].unitPriceCents must be an integer from 0 to 100000000, got null"),
    *[
        (
            _with_product(1, sku=sku),
            f"products[1].sku must be 1 to 32 characters of A-Z 0-9 and -, starting with a letter or digit, got {shown}",
        )
        for sku, shown in (
            ("", "''"),
            ("seat", "'seat'"),
            ("SE AT", "'SE AT'"),
            ("-SEAT", "'-SEAT'"),
            ("S" * 33, "'" + "S" * 33 + "'"),
            (7, "7"),
        )
    ],
    (
        _with_product(3, sku="SUPPORT-STD"),
        "products[3].sku 'SUPPORT-STD' is already used by products[1]: skus must be unique",
    ),
    *[
        (
            _with_product(5, description=description),
            "products[5].description must be a string of 1 to 120 characters, not blank and without control characters,"
            f" got {shown}",
        )
        for description, shown in (
            ("", "''"),
            ("   ", "'   '"),
            ("x" * 121, "'" + "x" * 40 + "...'"),
            ("two\nlines", "'two\\nlines'"),
            (None, "null"),
        )
    ],
    (
        {"products": [p for p in SEED_PRODUCTS if p["sku"] not in ("SEAT", "API-10K")]},
        "products must include every sku that invoices bill; missing 'SEAT', 'API-10K'",
    ),
    ({"products": SEED_PRODUCTS, "taxBasisPoints": 10_001}, "taxBasisPoints must be an integer from 0 to 10000, got 10001"),
    ({"products": SEED_PRODUCTS, "taxBasisPoints": -1}, "taxBasisPoints must be an integer from 0 to 10000, got -1"),
    ({"products": SEED_PRODUCTS, "taxBasisPoints": "825"}, "taxBasisPoints must be an integer from 0 to 10000, got '825'"),
    ({"products": SEED_PRODUCTS, "taxBasisPoints": 8.25}, "taxBasisPoints must be an integer from 0 to 10000, got 8.25"),
    ({"products": SEED_PRODUCTS, "baseVersion": 0}, "baseVersion must be an integer of at least 1, got 0"),
    ({"products": SEED_PRODUCTS, "baseVersion": None}, "baseVersion must be an integer of at least 1, got null"),
    ({"products": SEED_PRODUCTS, "baseVersion": "1"}, "baseVersion must be an integer of at least 1, got '1'"),
    ([SEED_PRODUCTS], "Request body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_PUTS, ids=[message[:60] for _, message in BAD_PUTS])
async def test_every_rule_is_a_400_that_names_the_field_and_stores_nothing(api: Api, body: Any, message: str) -> None:
    before = await api.json("GET", "/api/prices")
    assert await api.put_prices(body, status=400) == {"error": message}
    assert await api.json("GET", "/api/prices") == before
    assert api.rows("SELECT COUNT(*) FROM price_lists") == [(1,)]


async def test_put_needs_a_json_body(api: Api) -> None:
    form = await api.client.put("/api/prices", data=b"products=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415
    broken = await api.client.put("/api/prices", data=b"{", headers=JSON)
    assert broken.status == 400
    assert (await broken.json())["error"].startswith("Request body is not valid JSON")
    cross_site = await api.client.put(
        "/api/prices", data=orjson.dumps({"products": SEED_PRODUCTS}), headers={**JSON, "Origin": "https://evil.example"}
    )
    assert cross_site.status == 403
    assert api.rows("SELECT COUNT(*) FROM price_lists") == [(1,)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
product_like = st.fixed_dictionaries(
    {},
    optional={
        "sku": json_values | st.sampled_from([p.sku for p in CATALOG]),
        "description": json_values,
        "unitPriceCents": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    body=json_values
    | st.fixed_dictionaries(
        {"products": st.lists(product_like | json_values, max_size=12)},
        optional={"taxBasisPoints": json_values, "baseVersion": json_values},
    )
)
def test_any_json_is_either_a_valid_price_list_or_a_validation_error(body: Any) -> None:
    try:
        update = validate_prices(body)
    except ValidationError as exc:
        assert str(exc)
    else:
        assert {product.sku for product in update.products} >= {product.sku for product in CATALOG}


# -- versions of batches and invoices -------------------------------------------------------------


async def test_a_batch_prices_at_the_version_current_when_it_started(api: Api) -> None:
    seed = as_price_list(await api.json("GET", "/api/prices"))
    first = await api.start("acct_v", 3, delay="300ms")
    assert first["priceVersion"] == 1
    # The list changes while the first batch runs: it keeps its version.
    second_list = as_price_list(await api.put_prices({"products": raised(SEED_PRODUCTS, 250), "taxBasisPoints": 1000}))
    second = await api.start("acct_w", 2)
    assert (second_list.version, second["priceVersion"]) == (2, 2)

    first_events = await api.events(first["runId"])
    second_events = await api.events(second["runId"])
    assert [event["priceVersion"] for event in first_events[:-1]] == [1, 1, 1]
    assert [event["priceVersion"] for event in second_events[:-1]] == [2, 2]
    first_invoices = await api.invoices(first["runId"])
    second_invoices = await api.invoices(second["runId"])
    assert [without_issued_at(i) for i in first_invoices] == [
        expected_invoice("acct_v", n, first["runId"], seed) for n in (1, 2, 3)
    ]
    assert [without_issued_at(i) for i in second_invoices] == [
        expected_invoice("acct_w", n, second["runId"], second_list) for n in (1, 2)
    ]
    # The stream carries what was stored.
    assert [event["totalCents"] for event in second_events[:-1]] == [i["totalCents"] for i in second_invoices]

    for run, version in ((first, 1), (second, 2)):
        status = await api.json("GET", f"/api/status?runId={run['runId']}")
        detail = await api.json("GET", f"/api/runs/{run['runId']}")
        assert (status["priceVersion"], detail["priceVersion"]) == (version, version)
    listed = (await api.json("GET", "/api/runs"))["runs"]
    assert [(run["runId"], run["priceVersion"]) for run in listed] == [(second["runId"], 2), (first["runId"], 1)]
    assert api.rows("SELECT invoice_id, price_version FROM invoices ORDER BY invoice_id") == [
        ("INV-acct_v-0001", 1),
        ("INV-acct_v-0002", 1),
        ("INV-acct_v-0003", 1),
        ("INV-acct_w-0001", 2),
        ("INV-acct_w-0002", 2),
    ]


async def test_one_invoice_by_id_and_the_csv_carry_skus_and_the_version(api: Api) -> None:
    prices = as_price_list(await api.put_prices({"products": raised(SEED_PRODUCTS, 1)}))
    run = await api.start("acct_d", 2)
    await api.events(run["runId"])
    one = await api.json("GET", "/api/invoices/INV-acct_d-0002")
    assert without_issued_at(one) == expected_invoice("acct_d", 2, run["runId"], prices)
    assert [item["sku"] for item in one["lineItems"]] == [item.sku for item in price_invoice("acct_d", 2, prices).items]
    for missing in ("INV-acct_d-0003", "INV-acct_d-3", "nope", "INV-acct d-0001"):
        body = await api.json("GET", f"/api/invoices/{missing}", status=404)
        assert body == {"error": f"Invoice {missing!r} not found"}

    response = await api.client.get(f"/api/runs/{run['runId']}/invoices", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(row["invoice_id"], row["n"], row["price_version"]) for row in rows] == [
        ("INV-acct_d-0001", "1", "2"),
        ("INV-acct_d-0002", "2", "2"),
    ]
    assert rows[1]["line_items"] == "; ".join(
        f"{item.quantity} x [{item.sku}] {item.description} @ {item.unit_price_cents}"
        for item in price_invoice("acct_d", 2, prices).items
    )


# -- numbering --------------------------------------------------------------------------------------


async def test_a_second_batch_continues_the_account_numbering(api: Api) -> None:
    first = await api.start("acct_1", 5)
    first_events = await api.events(first["runId"])
    second = await api.start("acct_1", 3, delay="10ms")
    second_events = await api.events(second["runId"])
    other = await api.start("acct_2", 2)
    await api.events(other["runId"])

    assert [i["invoiceId"] for i in await api.invoices(first["runId"])] == ids("acct_1", range(1, 6))
    assert [i["invoiceId"] for i in await api.invoices(second["runId"])] == ids("acct_1", range(6, 9))
    assert [i["invoiceId"] for i in await api.invoices(other["runId"])] == ids("acct_2", range(1, 3))
    # The progress event names the number actually taken; "current" counts the batch.
    assert [(e["current"], e["invoiceId"], e["message"]) for e in second_events[:-1]] == [
        (1, "INV-acct_1-0006", "Generated invoice 1 of 3"),
        (2, "INV-acct_1-0007", "Generated invoice 2 of 3"),
        (3, "INV-acct_1-0008", "Generated invoice 3 of 3"),
    ]
    assert [e["invoiceId"] for e in first_events[:-1]] == ids("acct_1", range(1, 6))
    assert second_events[-1]["type"] == "complete"
    assert api.rows("SELECT run_id, k, n FROM run_invoices WHERE run_id = ? ORDER BY k", (second["runId"],)) == [
        (second["runId"], 1, 6),
        (second["runId"], 2, 7),
        (second["runId"], 3, 8),
    ]
    assert (await api.json("GET", f"/api/status?runId={second['runId']}"))["current"] == 3


async def test_concurrent_batches_of_one_account_interleave_without_gap_or_duplicate(api: Api) -> None:
    totals = (41, 30, 17)
    runs = [await api.start("acct_c", total) for total in totals]
    streams = await asyncio.gather(*(api.events(run["runId"]) for run in runs))
    taken: list[int] = []
    for run, total, events in zip(runs, totals, streams, strict=True):
        invoices = await api.invoices(run["runId"])
        numbers = [invoice["n"] for invoice in invoices]
        assert len(numbers) == total
        assert numbers == sorted(numbers)  # a batch takes its numbers in its own order
        assert [i["invoiceId"] for i in invoices] == [f"INV-acct_c-{n:04d}" for n in numbers]
        # Events in invoice order, each naming the invoice stored for that k.
        assert [e["current"] for e in events[:-1]] == list(range(1, total + 1))
        assert [e["invoiceId"] for e in events[:-1]] == [i["invoiceId"] for i in invoices]
        taken += numbers
    assert sorted(taken) == list(range(1, sum(totals) + 1))
    assert api.rows("SELECT COUNT(*), COUNT(DISTINCT invoice_id), MIN(n), MAX(n) FROM invoices") == [(88, 88, 1, 88)]
