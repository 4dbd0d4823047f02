// The table of issued invoices: each invoice once (by id), newest first, at
// most MAX_ROWS rows in the DOM however long the batch, plus the full count.

import { formatMoney, plural } from "./format.js";

export const MAX_ROWS = 200;

export class InvoiceTable {
  /** @param {{body: HTMLTableSectionElement, count: HTMLElement, empty: HTMLElement}} elements */
  constructor({ body, count, empty }) {
    this.body = body;
    this.countEl = count;
    this.emptyEl = empty;
    this.reset();
  }

  reset() {
    this.seen = new Set();
    this.queue = [];
    this.count = 0;
    this.body.replaceChildren();
    this.renderCount();
  }

  /** Add an invoice (drawn at the next flush); returns false when it was already shown. */
  add(invoice) {
    if (this.seen.has(invoice.invoiceId)) return false;
    this.seen.add(invoice.invoiceId);
    this.count += 1;
    this.queue.push(invoice);
    return true;
  }

  flush() {
    if (this.queue.length === 0) return;
    const batch = this.queue.slice(-MAX_ROWS);
    this.queue = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) fragment.append(this.row(batch[i]));
    this.body.prepend(fragment);
    while (this.body.rows.length > MAX_ROWS) this.body.lastElementChild.remove();
    this.renderCount();
  }

  row(invoice) {
    const tr = document.createElement("tr");
    tr.dataset.invoiceId = invoice.invoiceId;
    if (invoice.n !== undefined) tr.dataset.n = String(invoice.n);
    const id = document.createElement("td");
    id.className = "mono";
    id.title = invoice.invoiceId;
    // "INV-<account>-" is the same on every row; narrow screens hide it visually.
    const cut = invoice.invoiceId.lastIndexOf("-") + 1;
    const prefix = document.createElement("span");
    prefix.className = "inv-prefix";
    prefix.textContent = invoice.invoiceId.slice(0, cut);
    id.append(prefix, invoice.invoiceId.slice(cut));
    const customer = document.createElement("td");
    customer.textContent = invoice.customer || "—";
    if (invoice.customer) customer.title = invoice.customer;
    const amount = document.createElement("td");
    amount.className = "num";
    amount.textContent = formatMoney(invoice.totalCents, invoice.currency);
    tr.append(id, customer, amount);
    return tr;
  }

  renderCount() {
    const shown = Math.min(this.count, MAX_ROWS);
    this.countEl.dataset.count = String(this.count);
    this.countEl.textContent = this.count > shown
      ? `${plural(this.count, "invoice")} · latest ${shown} shown`
      : plural(this.count, "invoice");
    this.emptyEl.hidden = this.count > 0;
  }
}
