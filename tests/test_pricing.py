from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from invoices.pricing import (
    CATALOG,
    CURRENCY,
    CUSTOMERS,
    InvoiceDraft,
    LineItem,
    invoice_id_for,
    price_invoice,
    tax_cents,
)


def test_invoice_ids_are_zero_padded_to_four_digits() -> None:
    assert invoice_id_for("acct_1", 1) == "INV-acct_1-0001"
    assert invoice_id_for("acct_1", 50) == "INV-acct_1-0050"
    assert invoice_id_for("a.b-c", 9999) == "INV-a.b-c-9999"
    assert invoice_id_for("acct_1", 10000) == "INV-acct_1-10000"


@pytest.mark.parametrize(
    ("subtotal", "tax"),
    [(0, 0), (1, 0), (6, 0), (60, 5), (61, 5), (200, 17), (1000, 83), (7500, 619), (73100, 6031)],
)
def test_tax_is_8_25_percent_rounded_half_up(subtotal: int, tax: int) -> None:
    assert tax_cents(subtotal) == tax


def test_tax_rejects_negative_subtotal() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        tax_cents(-1)


def test_exact_prices_for_known_invoices() -> None:
    first = price_invoice("acct_1", 1)
    assert first == InvoiceDraft(
        customer="Harbor Light Marine",
        items=(LineItem("API-10K", "API calls (10k bundle)", 3, 2500),),
    )
    assert (first.subtotal_cents, first.tax_cents, first.total_cents) == (7500, 619, 8119)
    assert first.currency == CURRENCY == "USD"

    second = price_invoice("acct_1", 2)
    assert second.customer == "Riverbend Veterinary"
    assert [item.to_json() for item in second.items] == [
        {"sku": "REPORT-CUSTOM", "description": "Custom report", "quantity": 3, "unitPriceCents": 7500, "amountCents": 22500},
        {
            "sku": "ONBOARDING-1H",
            "description": "Onboarding session (1 h)",
            "quantity": 1,
            "unitPriceCents": 15000,
            "amountCents": 15000,
        },
        {
            "sku": "SSL-YEARLY",
            "description": "SSL certificate (yearly)",
            "quantity": 4,
            "unitPriceCents": 8900,
            "amountCents": 35600,
        },
    ]
    assert (second.subtotal_cents, second.tax_cents, second.total_cents) == (73100, 6031, 79131)

    other = price_invoice("acme.eu", 7)
    assert other.customer == "Acme Anvils Ltd"
    assert (other.subtotal_cents, other.tax_cents, other.total_cents) == (249200, 20559, 269759)


def test_drafts_are_well_formed_over_many_invoices() -> None:
    sizes: set[int] = set()
    customers: set[str] = set()
    prices = {product.description: product.unit_price_cents for product in CATALOG}
    for n in range(1, 500):
        draft = price_invoice("acct_1", n)
        sizes.add(len(draft.items))
        customers.add(draft.customer)
        descriptions = [item.description for item in draft.items]
        assert len(set(descriptions)) == len(descriptions)
        for item in draft.items:
            assert prices[item.description] == item.unit_price_cents
            assert 1 <= item.quantity <= 5
        assert draft.total_cents == draft.subtotal_cents + draft.tax_cents
    assert sizes == {1, 2, 3}
    assert customers == set(CUSTOMERS)


def test_pricing_is_stable_across_processes() -> None:
    # hash() is salted per process; the table must not depend on it.
    code = "from invoices.pricing import price_invoice; print(price_invoice('acct_9', 42).total_cents)"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(price_invoice("acct_9", 42).total_cents)}
