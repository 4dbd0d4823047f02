// The table of issued invoices: each invoice once (by id), newest first, at
// most MAX_ROWS rows in the DOM however long the batch, plus the full count.
// An invoice's id is a button that opens a row below it with its line items
// (fetched once per invoice: an issued invoice never changes).

import { formatMoney, plural } from "./format.js";

export const MAX_ROWS = 200;
const MAX_CACHED = 500;

export class InvoiceTable {
  /**
   * @param {{body: HTMLTableSectionElement, count: HTMLElement, empty: HTMLElement,
   *          fetchInvoice(invoiceId: string): Promise<object>}} elements
   */
  constructor({ body, count, empty, fetchInvoice }) {
    this.body = body;
    this.countEl = count;
    this.emptyEl = empty;
    this.fetchInvoice = fetchInvoice;
    this.details = new Map(); // invoice id -> Promise of the invoice
    this.body.addEventListener("click", (event) => {
      const toggle = event.target.closest("button.row-toggle");
      if (toggle && this.body.contains(toggle)) this.toggle(toggle.closest("tr"));
    });
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
    const rows = this.body.querySelectorAll(":scope > tr[data-invoice-id]");
    for (let i = MAX_ROWS; i < rows.length; i++) {
      this.detailRow(rows[i])?.remove();
      rows[i].remove();
    }
    this.renderCount();
  }

  row(invoice) {
    const tr = document.createElement("tr");
    tr.dataset.invoiceId = invoice.invoiceId;
    if (invoice.n !== undefined) tr.dataset.n = String(invoice.n);
    const id = document.createElement("td");
    id.className = "mono";
    id.title = invoice.invoiceId;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "row-toggle";
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-label", `${invoice.invoiceId} line items`);
    // "INV-<account>-" is the same on every row; narrow screens hide it visually.
    const cut = invoice.invoiceId.lastIndexOf("-") + 1;
    const prefix = document.createElement("span");
    prefix.className = "inv-prefix";
    prefix.textContent = invoice.invoiceId.slice(0, cut);
    toggle.append(prefix, invoice.invoiceId.slice(cut));
    id.append(toggle);
    const customer = document.createElement("td");
    customer.textContent = invoice.customer || "—";
    if (invoice.customer) customer.title = invoice.customer;
    const amount = document.createElement("td");
    amount.className = "num";
    amount.textContent = formatMoney(invoice.totalCents, invoice.currency);
    tr.append(id, customer, amount);
    return tr;
  }

  // ---------------------------------------------------------------- line items

  detailRow(tr) {
    const next = tr.nextElementSibling;
    return next && next.classList.contains("invoice-detail") ? next : null;
  }

  toggle(tr) {
    const toggle = tr.querySelector("button.row-toggle");
    const open = this.detailRow(tr);
    if (open) {
      open.remove();
      toggle.setAttribute("aria-expanded", "false");
      toggle.removeAttribute("aria-controls");
      return;
    }
    const invoiceId = tr.dataset.invoiceId;
    const detail = document.createElement("tr");
    detail.className = "invoice-detail";
    detail.id = `detail-${invoiceId}`;
    const cell = document.createElement("td");
    cell.colSpan = 3;
    cell.textContent = "Loading line items…";
    detail.append(cell);
    tr.after(detail);
    toggle.setAttribute("aria-expanded", "true");
    toggle.setAttribute("aria-controls", detail.id);
    this.invoice(invoiceId).then(
      (invoice) => cell.replaceChildren(lineItemsTable(invoice)),
      (err) => {
        this.details.delete(invoiceId);
        cell.textContent = `Could not load the line items: ${err.message}`;
        cell.classList.add("detail-error");
      },
    );
  }

  invoice(invoiceId) {
    let pending = this.details.get(invoiceId);
    if (!pending) {
      pending = this.fetchInvoice(invoiceId);
      this.details.set(invoiceId, pending);
      if (this.details.size > MAX_CACHED) this.details.delete(this.details.keys().next().value);
    }
    return pending;
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

function cell(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

/** An invoice's lines, subtotal, tax and total, as the API stored them. */
export function lineItemsTable(invoice) {
  const money = (cents) => formatMoney(cents, invoice.currency);
  const table = document.createElement("table");
  table.className = "line-items";
  table.append(cell("caption", `Line items of ${invoice.invoiceId}, priced at price list v${invoice.priceVersion}`));
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  for (const [label, className] of [["SKU"], ["Description"], ["Qty", "num"], ["Unit price", "num"], ["Amount", "num"]]) {
    const th = cell("th", label, className);
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = document.createElement("tbody");
  for (const item of invoice.lineItems) {
    const tr = document.createElement("tr");
    tr.dataset.sku = item.sku;
    tr.append(
      cell("td", item.sku, "mono"),
      cell("td", item.description),
      cell("td", String(item.quantity), "num"),
      cell("td", money(item.unitPriceCents), "num"),
      cell("td", money(item.amountCents), "num"),
    );
    body.append(tr);
  }
  const foot = document.createElement("tfoot");
  for (const [label, cents] of [["Subtotal", invoice.subtotalCents], ["Tax", invoice.taxCents], ["Total", invoice.totalCents]]) {
    const tr = document.createElement("tr");
    const th = cell("th", label);
    th.scope = "row";
    th.colSpan = 4;
    tr.append(th, cell("td", money(cents), "num"));
    foot.append(tr);
  }
  table.append(head, body, foot);
  return table;
}
