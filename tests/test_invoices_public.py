from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

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
    # Every name is there; the package's other public attributes are its submodules (and the
    # ``annotations`` of ``from __future__ import annotations``).
    names = [name for name in dir(invoices) if not name.startswith("_") and name != "annotations"]
    assert [name for name in names if not isinstance(getattr(invoices, name), ModuleType)] == invoices.__all__
    assert invoices.WORKFLOW_NAME == "invoices.batch"


def test_the_application_sql_uses_no_numbered_placeholders() -> None:
    # sqlite3 warns about ``?1`` bound from a sequence since Python 3.12 and refuses it
    # from 3.14: the application's statements use ``?`` or ``:name`` only.
    sources = sorted(Path(invoices.__file__).parent.glob("*.py"))
    numbered = [(path.name, m.group()) for path in sources for m in re.finditer(r"\?\d+", path.read_text())]
    assert len(sources) > 5
    assert numbered == []
