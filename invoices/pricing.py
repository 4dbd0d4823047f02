"""Pricing: what invoice n of an account bills, at the prices of one price-list version.

What an invoice bills is split in two:

- *what* is sold, the customer and each line's sku and quantity, is a pure
  function of ``(account_id, n)``: the same pair gives the same lines in every
  process and on every platform (choices come from ``zlib.crc32``, never from
  ``hash()``, which is salted per process). The lines are picked from the skus
  of ``CATALOG``, the products the service sells (``BILLED_SKUS``);
- *at what price*, each sku's description and unit price and the tax rate,
  comes from a ``PriceList``: a numbered, immutable version of the prices
  (version 1 is ``CATALOG`` itself, see ``SEED_PRICES``).

Amounts are integer cents; tax is in basis points and rounded half up.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BILLED_SKUS",
    "CATALOG",
    "CURRENCY",
    "CUSTOMERS",
    "SEED_PRICES",
    "SEED_PRICE_VERSION",
    "TAX_RATE_BASIS_POINTS",
    "InvoiceDraft",
    "LineItem",
    "PriceList",
    "Product",
    "invoice_id_for",
    "price_invoice",
    "reprice",
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
    """One entry of a price list."""

    sku: str
    description: str
    unit_price_cents: int

    def to_json(self) -> dict[str, Any]:
        return {"sku": self.sku, "description": self.description, "unitPriceCents": self.unit_price_cents}


CATALOG: tuple[Product, ...] = (
    Product("HOST-MONTHLY", "Cloud hosting (monthly)", 4900),
    Product("SUPPORT-STD", "Support plan - standard", 19900),
    Product("SUPPORT-PREM", "Support plan - premium", 49900),
    Product("SEAT", "Extra user seat", 1200),
    Product("STORAGE-100GB", "Storage add-on 100 GB", 999),
    Product("ONBOARDING-1H", "Onboarding session (1 h)", 15000),
    Product("API-10K", "API calls (10k bundle)", 2500),
    Product("REPORT-CUSTOM", "Custom report", 7500),
    Product("SSL-YEARLY", "SSL certificate (yearly)", 8900),
    Product("DATA-MIGRATION", "Data migration", 35000),
)

#: The skus invoices are made of, in the order the line picker indexes them.
#: Every price list must price all of them.
BILLED_SKUS: tuple[str, ...] = tuple(product.sku for product in CATALOG)

SEED_PRICE_VERSION = 1


@dataclass(frozen=True, slots=True)
class PriceList:
    """One version of the prices; ``updated_at`` is when it became current (``None`` until stored)."""

    version: int
    currency: str
    tax_basis_points: int
    products: tuple[Product, ...]
    updated_at: str | None = None
    _by_sku: dict[str, Product] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_sku", {product.sku: product for product in self.products})

    def product(self, sku: str) -> Product:
        """The entry for ``sku``; ``KeyError`` naming the version when it has none."""
        try:
            return self._by_sku[sku]
        except KeyError:
            raise KeyError(f"price list version {self.version} has no product {sku!r}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "currency": self.currency,
            "taxBasisPoints": self.tax_basis_points,
            "products": [product.to_json() for product in self.products],
            "updatedAt": self.updated_at,
        }


#: Version 1, what the service billed before prices were data.
SEED_PRICES = PriceList(SEED_PRICE_VERSION, CURRENCY, TAX_RATE_BASIS_POINTS, CATALOG)


@dataclass(frozen=True, slots=True)
class LineItem:
    """A priced line of an invoice."""

    sku: str
    description: str
    quantity: int
    unit_price_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def to_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
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
    tax_basis_points: int = TAX_RATE_BASIS_POINTS
    price_version: int = SEED_PRICE_VERSION

    @property
    def subtotal_cents(self) -> int:
        return sum(item.amount_cents for item in self.items)

    @property
    def tax_cents(self) -> int:
        return tax_cents(self.subtotal_cents, self.tax_basis_points)

    @property
    def total_cents(self) -> int:
        return self.amounts()[2]

    def amounts(self) -> tuple[int, int, int]:
        """``(subtotal_cents, tax_cents, total_cents)``, the lines summed once (a batch prices thousands)."""
        subtotal = self.subtotal_cents
        tax = tax_cents(subtotal, self.tax_basis_points)
        return subtotal, tax, subtotal + tax


def invoice_id_for(account_id: str, n: int) -> str:
    """``INV-<accountId>-<nnnn>``: n zero-padded to 4 digits (wider n keeps all its digits)."""
    return f"INV-{account_id}-{n:04d}"


def tax_cents(subtotal_cents: int, basis_points: int = TAX_RATE_BASIS_POINTS) -> int:
    """Tax on a non-negative subtotal at ``basis_points`` (825 = 8.25 %), rounded half up to the cent."""
    if subtotal_cents < 0:
        raise ValueError(f"subtotal must be non-negative, got {subtotal_cents}")
    return (subtotal_cents * basis_points + 5_000) // 10_000


def _choice(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def price_invoice(account_id: str, n: int, prices: PriceList = SEED_PRICES) -> InvoiceDraft:
    """The customer and 1-3 line items that invoice ``n`` of ``account_id`` bills, at ``prices``."""
    seed = _choice(f"{account_id}:{n}")
    customer = CUSTOMERS[seed % len(CUSTOMERS)]
    count = 1 + (seed >> 8) % 3
    items: list[LineItem] = []
    used: set[int] = set()
    for line in range(count):
        pick = _choice(f"{account_id}:{n}:{line}")
        index = pick % len(BILLED_SKUS)
        while index in used:  # distinct products per invoice
            index = (index + 1) % len(BILLED_SKUS)
        used.add(index)
        product = prices.product(BILLED_SKUS[index])
        quantity = 1 + (pick >> 8) % 5
        items.append(LineItem(product.sku, product.description, quantity, product.unit_price_cents))
    return InvoiceDraft(
        customer=customer,
        items=tuple(items),
        currency=prices.currency,
        tax_basis_points=prices.tax_basis_points,
        price_version=prices.version,
    )


def reprice(customer: str, items: tuple[LineItem, ...], prices: PriceList) -> InvoiceDraft:
    """The same customer and lines (each sku and quantity) at ``prices``: what a replacement invoice bills."""
    priced: list[LineItem] = []
    for item in items:
        product = prices.product(item.sku)
        priced.append(LineItem(product.sku, product.description, item.quantity, product.unit_price_cents))
    return InvoiceDraft(
        customer=customer,
        items=tuple(priced),
        currency=prices.currency,
        tax_basis_points=prices.tax_basis_points,
        price_version=prices.version,
    )
