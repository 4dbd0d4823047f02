"""The pricing table: what invoice n of an account bills, deterministically.

Everything here is a pure function of ``(account_id, n)``: the same pair gives
the same customer, line items and amounts in every process and on every
platform (choices come from ``zlib.crc32``, never from ``hash()``, which is
salted per process). Amounts are integer cents; tax is rounded half up.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CATALOG",
    "CURRENCY",
    "CUSTOMERS",
    "TAX_RATE_BASIS_POINTS",
    "InvoiceDraft",
    "LineItem",
    "Product",
    "invoice_id_for",
    "price_invoice",
    "tax_cents",
]

CURRENCY = "USD"

#: 8.25 % expressed in basis points (1/100 of a percent), so tax stays integer.
TAX_RATE_BASIS_POINTS = 825

CUSTOMERS: tuple[str, ...] = (
    "Acme Anvils Ltd",
    "Blue Heron Bakery",
    "Copperfield Logistics",
    "Driftwood Surf Co",
    "Evergreen Dental Group",
    "Foxglove Florists",
    "Granite Peak Outfitters",
    "Harbor Light Marine",
    "Ironbark Construction",
    "Juniper Yoga Studio",
    "Kestrel Aviation",
    "Lantern Street Books",
    "Maple & Main Hardware",
    "Northwind Traders",
    "Orchard Hill Cider",
    "Pinecone Daycare",
    "Quartz Analytics",
    "Riverbend Veterinary",
    "Saffron Table Catering",
    "Tidewater Plumbing",
)


@dataclass(frozen=True, slots=True)
class Product:
    """One entry of the product catalog."""

    description: str
    unit_price_cents: int


CATALOG: tuple[Product, ...] = (
    Product("Cloud hosting (monthly)", 4900),
    Product("Support plan - standard", 19900),
    Product("Support plan - premium", 49900),
    Product("Extra user seat", 1200),
    Product("Storage add-on 100 GB", 999),
    Product("Onboarding session (1 h)", 15000),
    Product("API calls (10k bundle)", 2500),
    Product("Custom report", 7500),
    Product("SSL certificate (yearly)", 8900),
    Product("Data migration", 35000),
)


@dataclass(frozen=True, slots=True)
class LineItem:
    """A priced line of an invoice."""

    description: str
    quantity: int
    unit_price_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "quantity": self.quantity,
            "unitPriceCents": self.unit_price_cents,
            "amountCents": self.amount_cents,
        }


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    """What an invoice bills, before it is stored."""

    customer: str
    items: tuple[LineItem, ...]
    currency: str = CURRENCY

    @property
    def subtotal_cents(self) -> int:
        return sum(item.amount_cents for item in self.items)

    @property
    def tax_cents(self) -> int:
        return tax_cents(self.subtotal_cents)

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents


def invoice_id_for(account_id: str, n: int) -> str:
    """``INV-<accountId>-<nnnn>``: n zero-padded to 4 digits (wider n keeps all its digits)."""
    return f"INV-{account_id}-{n:04d}"


def tax_cents(subtotal_cents: int) -> int:
    """Tax on a non-negative subtotal at 8.25 %, rounded half up to the cent."""
    if subtotal_cents < 0:
        raise ValueError(f"subtotal must be non-negative, got {subtotal_cents}")
    return (subtotal_cents * TAX_RATE_BASIS_POINTS + 5_000) // 10_000


def _choice(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def price_invoice(account_id: str, n: int) -> InvoiceDraft:
    """The customer and 1-3 line items that invoice ``n`` of ``account_id`` bills."""
    seed = _choice(f"{account_id}:{n}")
    customer = CUSTOMERS[seed % len(CUSTOMERS)]
    count = 1 + (seed >> 8) % 3
    items: list[LineItem] = []
    used: set[int] = set()
    for line in range(count):
        pick = _choice(f"{account_id}:{n}:{line}")
        index = pick % len(CATALOG)
        while index in used:  # distinct products per invoice
            index = (index + 1) % len(CATALOG)
        used.add(index)
        product = CATALOG[index]
        quantity = 1 + (pick >> 8) % 5
        items.append(LineItem(product.description, quantity, product.unit_price_cents))
    return InvoiceDraft(customer=customer, items=tuple(items))
