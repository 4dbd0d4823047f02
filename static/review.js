// The approval banner: shown while the selected batch waits for approval after
// its first invoices (reviewFirst). It lists those invoices with their line
// items and unit prices, so a wrong price is spotted before the rest go out,
// and offers Approve (issue the rest) and Reject (cancel the batch).

import { formatMoney, plural } from "./format.js";
import { lineItemsTable } from "./table.js";

export class ApprovalBanner {
  /**
   * @param {{section: HTMLElement, text: HTMLElement, list: HTMLElement, approve: HTMLButtonElement,
   *          reject: HTMLButtonElement, error: HTMLElement, fetchInvoices(runId: string): Promise<object>,
   *          onApprove(): void, onReject(): void}} options
   */
  constructor({ section, text, list, approve, reject, error, fetchInvoices, onApprove, onReject }) {
    this.section = section;
    this.textEl = text;
    this.list = list;
    this.approveButton = approve;
    this.rejectButton = reject;
    this.errorEl = error;
    this.fetchInvoices = fetchInvoices;
    this.shown = null; // "<runId>:<reviewed>" of the invoices listed
    approve.addEventListener("click", () => onApprove());
    reject.addEventListener("click", () => onReject());
  }

  /** Show the banner for `review` ({runId, current, total}), or hide it (null). */
  render(review) {
    if (!review) {
      this.section.hidden = true;
      this.shown = null;
      this.list.replaceChildren();
      this.showError(null);
      this.idle();
      return;
    }
    const { runId, current, total } = review;
    const rest = total - current;
    this.textEl.textContent = `The first ${plural(current, "invoice")} of ${total} ${current === 1 ? "is" : "are"} issued. `
      + "Check their unit prices: "
      + (rest > 0 ? `Approve issues the remaining ${rest}` : "Approve completes the batch")
      + "; Reject cancels the batch.";
    this.section.hidden = false;
    const key = `${runId}:${current}`;
    if (this.shown === key) return;
    this.shown = key;
    this.idle();
    this.showError(null);
    this.list.replaceChildren(note("Loading the invoices to review…"));
    this.fetchInvoices(runId).then(
      (body) => {
        if (this.shown === key) this.list.replaceChildren(...body.invoices.map(reviewedInvoice));
      },
      (err) => {
        if (this.shown !== key) return;
        this.shown = null; // the next render tries again
        this.list.replaceChildren(note(`Could not load the invoices to review: ${err.message}`));
      },
    );
  }

  /** A decision is being sent: both buttons wait for its answer. */
  busy(which) {
    this.approveButton.disabled = true;
    this.rejectButton.disabled = true;
    const button = which === "approve" ? this.approveButton : this.rejectButton;
    button.textContent = which === "approve" ? "Approving…" : "Rejecting…";
    this.showError(null);
  }

  idle() {
    this.approveButton.disabled = false;
    this.rejectButton.disabled = false;
    this.approveButton.textContent = "Approve";
    this.rejectButton.textContent = "Reject";
  }

  failed(message) {
    this.idle();
    this.showError(message);
  }

  showError(message) {
    this.errorEl.textContent = message || "";
    this.errorEl.hidden = !message;
  }
}

function note(text) {
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = text;
  return p;
}

/** One invoice under review: its id, customer and total, then its line items. */
function reviewedInvoice(invoice) {
  const article = document.createElement("article");
  article.className = "approval-invoice";
  article.dataset.invoiceId = invoice.invoiceId;
  const head = document.createElement("h4");
  const id = document.createElement("span");
  id.className = "mono";
  id.textContent = invoice.invoiceId;
  const customer = document.createElement("span");
  customer.textContent = invoice.customer;
  const total = document.createElement("span");
  total.className = "num";
  total.textContent = formatMoney(invoice.totalCents, invoice.currency);
  head.append(id, customer, total);
  article.append(head, lineItemsTable(invoice));
  return article;
}
