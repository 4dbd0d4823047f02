from __future__ import annotations

import invoices


def test_public_surface() -> None:
    assert invoices.__all__ == sorted(
        [
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
    )
    for name in invoices.__all__:
        assert hasattr(invoices, name), name
    assert invoices.WORKFLOW_NAME == "invoices.batch"
