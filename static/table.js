// The table of issued invoices: each invoice once (by id), newest first, at
// most MAX_ROWS rows in the DOM however long the batch, plus the full count.
// An invoice's id is a button that opens a row below it with its line items
// (fetched once per invoice: lines and amounts never change). A corrected
// invoice is struck through, with links to the credit note that voids it and
// to its replacement; a link opens that document's lines below the row.

import { formatMoney, plural } from "./format.js";

export const MAX_ROWS = 200;
const MAX_CACHED = 500;

export class InvoiceTable {
  /**
   * @param {{body: HTMLTableSectionElement, count: HTMLElement, empty: HTMLElement,
   *          fetchInvoice(invoiceId: string): Promise<object>,
   *          fetchCreditNote(creditNoteId: string): Promise<object>}} elements
   */
  constructor({ body, count, empty, fetchInvoice, fetchCreditNote }) {
    this.body = body;
    this.countEl = count;
    this.emptyEl = empty;
    this.fetchers = { invoice: fetchInvoice, creditNote: fetchCreditNote };
    this.details = new Map(); // document id -> Promise of the document
    this.corrections = new Map(); // invoice id -> {creditNoteId, replacementId, status}
    this.body.addEventListener("click", (event) => {
      const toggle = event.target.closest("button.row-toggle");
      if (toggle && this.body.contains(toggle)) {
        this.toggle(toggle.closest("tr"));
        return;
      }
      const link = event.target.closest("a.doc-link");
      if (link && this.body.contains(link)) {
        event.preventDefault();
        this.openDocument(link.closest("tr"), link.dataset.doc, link.dataset.kind);
      }
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
    const name = document.createElement("span");
    name.className = "customer-name";
    name.textContent = invoice.customer || "—";
    customer.append(name);
    if (invoice.customer) customer.title = invoice.customer;
    const amount = document.createElement("td");
    amount.className = "num";
    amount.textContent = formatMoney(invoice.totalCents, invoice.currency);
    tr.append(id, customer, amount);
    this.showCorrection(tr);
    return tr;
  }

  // ---------------------------------------------------------------- corrections

  /** Show exactly these corrections (GET /api/runs/<id>/corrections): the corrected rows struck through. */
  setCorrections(corrections) {
    this.corrections = new Map();
    for (const correction of corrections) {
      if (correction.status === "corrected") this.corrections.set(correction.invoiceId, correction);
    }
    for (const tr of this.body.querySelectorAll(":scope > tr[data-invoice-id]")) this.showCorrection(tr);
  }

  /** One more corrected invoice (a correction event). */
  markCorrection(correction) {
    this.corrections.set(correction.invoiceId, correction);
    const tr = this.body.querySelector(`:scope > tr[data-invoice-id="${CSS.escape(correction.invoiceId)}"]`);
    if (tr) this.showCorrection(tr);
  }

  showCorrection(tr) {
    const correction = this.corrections.get(tr.dataset.invoiceId);
    const customer = tr.cells[1];
    customer.querySelector(".void-note")?.remove();
    tr.classList.toggle("voided", Boolean(correction));
    tr.dataset.status = correction ? "voided" : "issued";
    if (!correction) return;
    const note = document.createElement("span");
    note.className = "void-note";
    note.append("Voided by ", docLink("creditNote", correction.creditNoteId, "credit-note-link"),
      ", replaced by ", docLink("invoice", correction.replacementId, "replacement-link"));
    customer.append(note);
  }

  // ---------------------------------------------------------------- line items

  detailRow(tr) {
    const next = tr.nextElementSibling;
    return next && next.classList.contains("invoice-detail") ? next : null;
  }

  toggle(tr) {
    this.openDocument(tr, tr.dataset.invoiceId, "invoice");
  }

  /** Open (or close, when it is the one open) the lines of document `docId` below row `tr`. */
  openDocument(tr, docId, kind) {
    const toggle = tr.querySelector("button.row-toggle");
    const open = this.detailRow(tr);
    if (open) {
      open.remove();
      toggle.setAttribute("aria-expanded", "false");
      toggle.removeAttribute("aria-controls");
      if (open.dataset.doc === docId) return;
    }
    const detail = document.createElement("tr");
    detail.className = "invoice-detail";
    detail.id = `detail-${docId}`;
    detail.dataset.doc = docId;
    const cell = document.createElement("td");
    cell.colSpan = 3;
    cell.textContent = "Loading line items…";
    detail.append(cell);
    tr.after(detail);
    if (docId === tr.dataset.invoiceId) {
      toggle.setAttribute("aria-expanded", "true");
      toggle.setAttribute("aria-controls", detail.id);
    }
    this.document(docId, kind).then(
      (doc) => cell.replaceChildren(lineItemsTable(doc, docId)),
      (err) => {
        this.details.delete(docId);
        cell.textContent = `Could not load the line items: ${err.message}`;
        cell.classList.add("detail-error");
      },
    );
  }

  document(docId, kind) {
    let pending = this.details.get(docId);
    if (!pending) {
      pending = this.fetchers[kind](docId);
      this.details.set(docId, pending);
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

/** The API's URL of a document, what a link to it opens without the page. */
function docLink(kind, docId, className) {
  const a = document.createElement("a");
  a.className = `doc-link ${className}`;
  a.href = kind === "creditNote" ? `/api/credit-notes/${encodeURIComponent(docId)}` : `/api/invoices/${encodeURIComponent(docId)}`;
  a.dataset.doc = docId;
  a.dataset.kind = kind;
  a.textContent = docId;
  return a;
}

/** An invoice's (or a credit note's) lines, subtotal, tax and total, as the API stored them. */
export function lineItemsTable(invoice, docId = invoice.invoiceId) {
  const money = (cents) => formatMoney(cents, invoice.currency);
  const table = document.createElement("table");
  table.className = "line-items";
  table.append(cell("caption", `Line items of ${docId}, priced at price list v${invoice.priceVersion}`));
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
