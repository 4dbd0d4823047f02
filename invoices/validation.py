"""Input rules: starting a batch and replacing the price list (section 10).

Decisions the design leaves open for ``POST /api/start``, made here:

- ``total`` must be a JSON integer: ``true`` is not an integer (Python's
  ``bool`` is an ``int`` subclass, so it is excluded explicitly), and ``5.0``
  and ``"5"`` are refused too, because JSON tells them apart and a client
  sending them has a bug worth hearing about.
- ``delay`` must be a duration *string* (``"0s"``, ``"500ms"``, ``"1.5h"``, or
  a bare number string meaning milliseconds), parsed by
  ``durable.parse_duration``; ``0`` to ``24h`` inclusive.
- ``reviewFirst`` is a JSON integer from 0 to 100 and at most
  ``total``: the batch issues that many invoices, then waits for a person's
  approval. ``approvalTimeout`` is a duration string above ``0s`` and up to 7
  days (how long that wait may last); it is checked even when ``reviewFirst``
  is 0, so a request is either valid or not whatever the other fields say.
- An absent ``total``, ``delay``, ``reviewFirst`` or ``approvalTimeout`` takes
  its default; an explicit ``null`` is an error (it is more likely a bug than
  a wish for the default).
- Unknown extra fields are ignored, so that older servers accept bodies from
  newer panels; they are never stored.

``PUT /api/prices`` is stricter: the body is stored as the new price list, so
an unknown field (``price`` for ``unitPriceCents``, say) is refused rather
than silently dropped. The whole list is checked before anything is stored,
and the first bad entry is named by its path (``products[2].unitPriceCents``).
Every sku invoices bill (``pricing.BILLED_SKUS``) must stay priced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from durable import parse_duration

from .pricing import BILLED_SKUS, Product

__all__ = [
    "ACCOUNT_ID_RE",
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_DELAY",
    "DEFAULT_TOTAL",
    "MAX_APPROVAL_TIMEOUT_SECONDS",
    "MAX_DELAY_SECONDS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_PRODUCTS",
    "MAX_REVIEW_FIRST",
    "MAX_TAX_BASIS_POINTS",
    "MAX_TOTAL",
    "MAX_UNIT_PRICE_CENTS",
    "SKU_RE",
    "PriceUpdate",
    "StartRequest",
    "ValidationError",
    "validate_prices",
    "validate_start",
]

ACCOUNT_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
DEFAULT_TOTAL = 50
MAX_TOTAL = 10_000
DEFAULT_DELAY = "1s"
MAX_DELAY_SECONDS = 24 * 60 * 60
MAX_REVIEW_FIRST = 100
DEFAULT_APPROVAL_TIMEOUT = "24h"
MAX_APPROVAL_TIMEOUT_SECONDS = 7 * 24 * 60 * 60
_MAX_DURATION_TEXT = 32  # longer strings are not durations anyone types; don't parse them
_DELAY_RULE = 'delay must be a duration string from "0s" to "24h" (e.g. "500ms", "1s", "5m")'
_APPROVAL_TIMEOUT_RULE = 'approvalTimeout must be a duration string above "0s" and up to "7 days" (e.g. "200ms", "30m", "24h")'

SKU_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{0,31}")
MAX_PRODUCTS = 200
MAX_DESCRIPTION_CHARS = 120
MAX_UNIT_PRICE_CENTS = 100_000_000  # one million dollars
MAX_TAX_BASIS_POINTS = 10_000  # 100 %
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_PRICE_FIELDS = ("products", "taxBasisPoints", "baseVersion")
_PRODUCT_FIELDS = ("sku", "description", "unitPriceCents")

_MISSING = object()


class ValidationError(ValueError):
    """A request field breaks an input rule; the message names the field and the rule."""


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A validated request to start a batch."""

    account_id: str
    total: int
    delay: str
    delay_seconds: float
    review_first: int = 0
    approval_timeout: str = DEFAULT_APPROVAL_TIMEOUT


def _show(value: Any) -> str:
    """A short, safe rendering of a rejected value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "..."
        return repr(text)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _account_id(body: dict[str, Any]) -> str:
    value = body.get("accountId", _MISSING)
    if value is _MISSING:
        raise ValidationError("accountId is required")
    rule = "accountId must be a string of 1 to 64 characters from A-Z a-z 0-9 _ . -"
    if not isinstance(value, str):
        raise ValidationError(f"{rule}, got {_show(value)}")
    if ACCOUNT_ID_RE.fullmatch(value) is None:
        raise ValidationError(f"{rule}, got {_show(value)}")
    return value


def _total(body: dict[str, Any]) -> int:
    value = body.get("total", _MISSING)
    if value is _MISSING:
        return DEFAULT_TOTAL
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOTAL:
        raise ValidationError(f"total must be an integer from 1 to {MAX_TOTAL}, got {_show(value)}")
    return value


def _duration(body: dict[str, Any], name: str, default: str, rule: str, *, zero: bool, high: float) -> tuple[str, float]:
    """A duration string field (``zero``: whether 0 is allowed) and its seconds, at most ``high``."""
    value = body.get(name, _MISSING)
    if value is _MISSING:
        return default, parse_duration(default)
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_DURATION_TEXT:
        raise ValidationError(f"{rule}, got {_show(value)}")
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValidationError(f"{rule}, got {_show(value)}: {exc}") from None
    low = 0 <= seconds if zero else 0 < seconds
    if not math.isfinite(seconds) or not low or seconds > high:
        raise ValidationError(f"{rule}, got {_show(value)}")
    return value, seconds


def _review_first(body: dict[str, Any], total: int) -> int:
    value = body.get("reviewFirst", _MISSING)
    if value is _MISSING:
        return 0
    if not _is_int(value) or not 0 <= value <= MAX_REVIEW_FIRST:
        raise ValidationError(f"reviewFirst must be an integer from 0 to {MAX_REVIEW_FIRST}, got {_show(value)}")
    if value > total:
        raise ValidationError(
            f"reviewFirst must be at most total ({total}): a batch reviews only invoices it issues, got {value}"
        )
    result: int = value
    return result


def validate_start(body: Any) -> StartRequest:
    """Check a decoded ``POST /api/start`` body; raise ``ValidationError`` on the first bad field."""
    if not isinstance(body, dict):
        raise ValidationError(f"request body must be a JSON object, got {_show(body)}")
    account_id = _account_id(body)
    total = _total(body)
    delay, seconds = _duration(body, "delay", DEFAULT_DELAY, _DELAY_RULE, zero=True, high=MAX_DELAY_SECONDS)
    review_first = _review_first(body, total)
    approval_timeout, _ = _duration(
        body, "approvalTimeout", DEFAULT_APPROVAL_TIMEOUT, _APPROVAL_TIMEOUT_RULE, zero=False, high=MAX_APPROVAL_TIMEOUT_SECONDS
    )
    return StartRequest(
        account_id=account_id,
        total=total,
        delay=delay,
        delay_seconds=seconds,
        review_first=review_first,
        approval_timeout=approval_timeout,
    )


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """A validated ``PUT /api/prices`` body; ``None`` fields were absent."""

    products: tuple[Product, ...]
    tax_basis_points: int | None
    base_version: int | None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_field(body: dict[str, Any], allowed: tuple[str, ...], where: str, takes: str) -> None:
    for name in body:
        if name not in allowed:
            raise ValidationError(f"{where}unknown field {_show(name)}: {takes}")


def _sku(value: Any, path: str) -> str:
    if not isinstance(value, str) or SKU_RE.fullmatch(value) is None:
        raise ValidationError(
            f"{path} must be 1 to 32 characters of A-Z 0-9 and -, starting with a letter or digit, got {_show(value)}"
        )
    return value


def _description(value: Any, path: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_DESCRIPTION_CHARS
        or not value.strip()
        or _CONTROL_RE.search(value) is not None
    ):
        raise ValidationError(
            f"{path} must be a string of 1 to {MAX_DESCRIPTION_CHARS} characters, not blank and without control characters,"
            f" got {_show(value)}"
        )
    return value


def _unit_price(value: Any, path: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_UNIT_PRICE_CENTS:
        raise ValidationError(f"{path} must be an integer from 0 to {MAX_UNIT_PRICE_CENTS}, got {_show(value)}")
    result: int = value
    return result


def _product(value: Any, index: int) -> Product:
    path = f"products[{index}]"
    if not isinstance(value, dict):
        raise ValidationError(f"{path} must be an object with sku, description and unitPriceCents, got {_show(value)}")
    _unknown_field(value, _PRODUCT_FIELDS, f"{path} has an ", "a product has sku, description and unitPriceCents")
    for name in _PRODUCT_FIELDS:
        if name not in value:
            raise ValidationError(f"{path}.{name} is required")
    return Product(
        sku=_sku(value["sku"], f"{path}.sku"),
        description=_description(value["description"], f"{path}.description"),
        unit_price_cents=_unit_price(value["unitPriceCents"], f"{path}.unitPriceCents"),
    )


def _product_list(body: dict[str, Any]) -> list[Any]:
    value = body.get("products", _MISSING)
    if value is _MISSING:
        raise ValidationError("products is required: a list of {sku, description, unitPriceCents}")
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PRODUCTS:
        shown = f"{len(value)} products" if isinstance(value, list) else _show(value)
        raise ValidationError(f"products must be a list of 1 to {MAX_PRODUCTS} products, got {shown}")
    return value


def _products(body: dict[str, Any], required_skus: Iterable[str]) -> tuple[Product, ...]:
    products: list[Product] = []
    first_at: dict[str, int] = {}
    for index, entry in enumerate(_product_list(body)):
        product = _product(entry, index)
        if product.sku in first_at:
            raise ValidationError(
                f"products[{index}].sku {_show(product.sku)} is already used by products[{first_at[product.sku]}]:"
                " skus must be unique"
            )
        first_at[product.sku] = index
        products.append(product)
    missing = [sku for sku in required_skus if sku not in first_at]
    if missing:
        names = ", ".join(_show(sku) for sku in missing)
        raise ValidationError(f"products must include every sku that invoices bill; missing {names}")
    return tuple(products)


def _optional_int(body: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = body.get(name, _MISSING)
    if value is _MISSING:
        return None
    if not _is_int(value) or value < low or (high is not None and value > high):
        rule = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
        raise ValidationError(f"{name} must be {rule}, got {_show(value)}")
    result: int = value
    return result


def validate_prices(body: Any, *, required_skus: Iterable[str] = BILLED_SKUS) -> PriceUpdate:
    """Check a decoded ``PUT /api/prices`` body; raise ``ValidationError`` on the first bad field."""
    if not isinstance(body, dict):
        raise ValidationError(f"request body must be a JSON object, got {_show(body)}")
    _unknown_field(body, _PRICE_FIELDS, "", "the body takes products, taxBasisPoints and baseVersion")
    products = _products(body, required_skus)
    tax = _optional_int(body, "taxBasisPoints", 0, MAX_TAX_BASIS_POINTS)
    base = _optional_int(body, "baseVersion", 1, None)
    return PriceUpdate(products=products, tax_basis_points=tax, base_version=base)
