"""The bulk invoicing application on the durable engine, and its HTTP API."""

from __future__ import annotations

from .app import create_app
from .pricing import InvoiceDraft, LineItem, invoice_id_for, price_invoice
from .store import Invoice, InvoiceStore
from .validation import StartRequest, ValidationError, validate_start
from .workflow import WORKFLOW_NAME, generate_invoices, issue_invoice

__all__ = [
    "Invoice",
    "InvoiceDraft",
    "InvoiceStore",
    "LineItem",
    "StartRequest",
    "ValidationError",
    "WORKFLOW_NAME",
    "create_app",
    "generate_invoices",
    "invoice_id_for",
    "issue_invoice",
    "price_invoice",
    "validate_start",
]
