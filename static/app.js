// Control panel: start form, the selected run followed live, run history, price list.
// The selected run lives in the URL (#run=<id>) so a reload picks it up again.

import { allowTokenPrompt, api, ApiError, csvUrl, downloadCsv, getToken, setTokenPrompt } from "./api.js";
import { VALIDATORS } from "./validate.js";
import { RunFollower } from "./stream.js";
import { elapsed, plural, setTime } from "./format.js";
import { InvoiceTable } from "./table.js";
import { RunHistory } from "./history.js";
import { PricePanel } from "./prices.js";
import { CorrectionPanel } from "./correction.js";
import { ApprovalBanner } from "./review.js";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const EVENT_STATUS = { complete: "completed", cancelled: "cancelled", error: "failed" };

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- token

function setupTokenPrompt() {
  const dialog = $("token-dialog");
  const form = $("token-form");
  const input = $("token-input");
  const error = $("token-error");
  setTokenPrompt((wasRejected) => new Promise((resolve) => {
    error.hidden = !wasRejected;
    error.textContent = wasRejected ? "That token was refused. Try again." : "";
    input.value = "";
    const done = (value) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("cancel", onCancel);
      cancelButton.removeEventListener("click", onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) {
        error.hidden = false;
        error.textContent = "Enter the token the server was started with.";
        input.focus();
        return;
      }
      done(value);
    };
    const onCancel = (event) => {
      event.preventDefault();
      done(null);
    };
    const cancelButton = $("token-cancel");
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", onCancel);
    cancelButton.addEventListener("click", onCancel);
    dialog.showModal();
    input.focus();
  }));
}

// ---------------------------------------------------------------- start form

const form = {
  el: null,
  touched: new Set(),

  init() {
    this.el = $("start-form");
    for (const name of Object.keys(VALIDATORS)) {
      const input = this.el.elements[name];
      input.addEventListener("blur", () => {
        this.touched.add(name);
        this.check(name);
      });
      input.addEventListener("input", () => {
        if (this.touched.has(name) || input.value.length > 0) this.check(name);
        // reviewFirst is bounded by total: a changed total may make it right, or wrong.
        if (name === "total" && this.touched.has("reviewFirst")) this.check("reviewFirst");
        this.showFormError(null);
      });
    }
    this.el.addEventListener("submit", (event) => {
      event.preventDefault();
      allowTokenPrompt();
      this.submit();
    });
  },

  check(name) {
    const input = this.el.elements[name];
    const values = Object.fromEntries(Object.keys(VALIDATORS).map((field) => [field, this.el.elements[field].value]));
    // A number field holding something that is not a number reports "" as its value:
    // the validator's message for text that is not a number.
    const message = VALIDATORS[name](input.validity.badInput ? "x" : input.value, values);
    this.showFieldError(name, message);
    return message === null;
  },

  showFieldError(name, message) {
    const input = this.el.elements[name];
    const out = $(`${name}-error`);
    out.textContent = message || "";
    out.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  },

  showFormError(message) {
    const out = $("form-error");
    out.textContent = message || "";
    out.hidden = !message;
  },

  async submit() {
    const names = Object.keys(VALIDATORS);
    names.forEach((name) => this.touched.add(name));
    const invalid = names.filter((name) => !this.check(name));
    if (invalid.length) {
      this.el.elements[invalid[0]].focus();
      return;
    }
    const button = $("start-button");
    button.disabled = true;
    button.textContent = "Starting…";
    this.showFormError(null);
    try {
      const { accountId, total, delay, reviewFirst } = this.el.elements;
      const started = await api.start(
        accountId.value.trim(), Number(total.value.trim()), delay.value.trim(), Number(reviewFirst.value.trim()),
      );
      runHistory.refresh();
      selectRun(started.runId, { push: true, initial: started });
    } catch (err) {
      this.showApiError(err);
    } finally {
      button.disabled = false;
      button.textContent = "Start batch";
    }
  },

  showApiError(err) {
    const message = err instanceof ApiError ? err.message : String(err);
    // The API names the field in its message; show it beside that field too.
    const field = err instanceof ApiError && err.status === 400
      ? Object.keys(VALIDATORS).find((name) => message.startsWith(name) || message.includes(`"${name}"`))
      : undefined;
    if (field) {
      this.showFieldError(field, message);
      this.el.elements[field].focus();
    }
    this.showFormError(`Not started: ${message}`);
  },
};

// ---------------------------------------------------------------- current run

const view = {};
let table;
let correction;
let banner;
// The selected run: { runId, status, total, current (invoices seen), finalCount
// (from the terminal event or the cancel answer), info (last /api/status), follower, ... }
let current = null;
// Set when the page itself writes #run=...; the hashchange that follows is not a navigation.
let ownHash = null;

function initView() {
  for (const id of ["run-panel", "run-badge", "run-empty", "run-body", "run-id", "run-account",
    "run-delay", "run-prices", "run-corrects-fact", "run-corrects", "run-created", "run-started", "run-completed",
    "progress", "progress-text", "run-status", "connection", "cancel-button", "csv-link", "run-error"]) {
    view[id] = $(id);
  }
  table = new InvoiceTable({
    body: $("invoice-rows"),
    count: $("invoice-count"),
    empty: $("invoices-empty"),
    fetchInvoice: (invoiceId) => api.invoice(invoiceId),
    fetchCreditNote: (creditNoteId) => api.creditNote(creditNoteId),
  });
  correction = new CorrectionPanel({
    block: $("correction"),
    summary: $("correction-summary"),
    progressBlock: $("correction-progress-block"),
    progress: $("correction-progress"),
    progressText: $("correction-text"),
    status: $("correction-status"),
    correct: $("correct-button"),
    cancel: $("correction-cancel"),
    csv: $("corrections-csv"),
    error: $("correction-error"),
  }, { table, onChange: () => runHistory.refresh() });
  banner = new ApprovalBanner({
    section: $("approval"),
    text: $("approval-text"),
    list: $("approval-invoices"),
    approve: $("approve-button"),
    reject: $("reject-button"),
    error: $("approval-error"),
    fetchInvoices: (runId) => api.invoices(runId),
    onApprove: approveCurrent,
    onReject: rejectCurrent,
  });
  view["cancel-button"].addEventListener("click", cancelCurrent);
  view["csv-link"].addEventListener("click", (event) => {
    if (!current || !getToken()) return; // a plain link works without a token
    event.preventDefault();
    downloadCsv(current.runId).catch((err) => showError(err.message));
  });
}

function runIdFromHash() {
  const match = /^#run=(.+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

function selectRun(runId, { push = false, initial = null } = {}) {
  if (push) {
    const hash = `#run=${encodeURIComponent(runId)}`;
    if (location.hash !== hash) ownHash = hash;
    location.hash = hash;
  }
  if (current && current.runId === runId) return;
  if (current) current.follower.stop();

  table.reset();
  current = {
    runId,
    status: initial ? "pending" : null,
    total: initial ? initial.total : null,
    current: 0,
    info: initial ? { ...initial, status: "pending" } : null,
    cancelResult: null,
    finalCount: null,
    errorMessage: null,
    statusError: false,
    // Invoices issued when the batch asked for approval, while it waits (from its
    // "review" event or the status' waitingFor); null otherwise.
    reviewed: null,
    approved: false, // once known approved, an older status answer cannot show the wait again
  };
  const run = current;
  run.follower = new RunFollower(runId, {
    onEvent: (index, data) => onStreamEvent(run, index, data),
    onState: (state) => onStreamState(run, state),
    onDrop: () => refreshStatus(run).then(() => run.status),
  });
  // The panel now shows this run, whose stream has not started: not the last one's state.
  onStreamState(run, "idle");
  showError(null);
  renderRun();
  runHistory.markSelected(runId);
  refreshStatus(run).then(() => {
    if (current === run) run.follower.start();
  });
}

/** Follow the current run again from scratch (after its stream gave up). */
function reselect() {
  const runId = current.runId;
  current.follower.stop();
  current = null;
  selectRun(runId);
}

function isCurrent(run) {
  return current === run;
}

async function refreshStatus(run, attempt = 0) {
  try {
    const info = await api.status(run.runId);
    if (!isCurrent(run)) return;
    const changed = run.info?.status !== info.status;
    run.info = info;
    if (TERMINAL.has(run.status) && !TERMINAL.has(info.status)) {
      // The stream's terminal event is written just before the run is marked
      // finished; read again shortly for the final status and times.
      if (attempt < 8) setTimeout(() => refreshStatus(run, attempt + 1), 150 * 2 ** Math.min(attempt, 4));
    } else {
      run.status = info.status;
    }
    if (typeof info.total === "number") run.total = info.total;
    // The stream says when the wait ends ("approved", or the batch's end); the status
    // only tells a wait the stream has not delivered yet.
    if (info.waitingFor === "approval" && run.reviewed === null && !run.approved) run.reviewed = info.current;
    if (TERMINAL.has(info.status) && typeof info.current === "number" && run.finalCount === null) {
      run.finalCount = info.current;
    }
    if (changed) runHistory.refresh();
    if (run.statusError) {
      run.statusError = false;
      showError(null);
    }
    renderRun();
  } catch (err) {
    if (!isCurrent(run) || !(err instanceof ApiError)) return;
    if (err.status === 404) {
      run.status = "unknown";
      run.follower.stop();
      renderRun();
      showError(`No run with id ${run.runId} was found.`);
    } else if (err.status !== 0) {
      // Status 0 (server unreachable) is already shown as "reconnecting".
      run.statusError = true;
      showError(err.message);
    }
  }
}

// The invoice an event says was issued: a batch's invoice, or a correction's replacement.
function issuedBy(data) {
  if (data.type === "correction") {
    return { invoiceId: data.replacementId, n: data.current, customer: data.customer, currency: data.currency,
      totalCents: data.totalCents };
  }
  const n = typeof data.current === "number" ? data.current : table.count + 1;
  const invoiceId = data.invoiceId || `INV-${data.accountId}-${String(n).padStart(4, "0")}`;
  return { invoiceId, n, customer: data.customer, currency: data.currency, totalCents: data.totalCents };
}

function onStreamEvent(run, index, data) {
  if (!isCurrent(run) || !data || typeof data !== "object") return;
  if (typeof data.total === "number") run.total = data.total;
  if (data.type === "progress" || data.type === "correction") {
    const invoice = issuedBy(data);
    table.add(invoice);
    run.current = Math.max(run.current, invoice.n, table.count);
    if (run.status === "pending" || run.status === null) {
      run.status = "running";
      refreshStatus(run); // picks up startedAt
    }
  } else if (data.type === "review") {
    run.reviewed = typeof data.current === "number" ? data.current : table.count;
  } else if (data.type === "approved") {
    run.reviewed = null;
    run.approved = true;
  } else if (data.type in EVENT_STATUS) {
    run.reviewed = null;
    run.status = EVENT_STATUS[data.type];
    // A correction's `current` also counts invoices it skipped or rolled back.
    const count = typeof data.invoicesCorrected === "number" ? data.invoicesCorrected : data.current;
    if (typeof count === "number") {
      run.current = Math.max(run.current, count);
      run.finalCount = count;
    }
    if (data.type === "error") run.errorMessage = data.message || "The batch failed.";
    refreshStatus(run);
    runHistory.refresh();
  }
  scheduleRender();
}

function onStreamState(run, state) {
  if (!isCurrent(run)) return;
  if (state === "closed") renderNow(); // a closed stream shows all it delivered
  view["run-panel"].dataset.stream = state;
  const conn = view.connection;
  if (state === "reconnecting") {
    conn.hidden = false;
    conn.textContent = "Connection lost — reconnecting…";
  } else {
    conn.hidden = true;
    conn.textContent = "";
  }
  if (state === "closed" && !TERMINAL.has(run.status)) refreshStatus(run);
}

// Events can arrive far faster than frames: draw rows and numbers together,
// once per frame, and still draw when frames are paused (background tab).
let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(renderNow);
  setTimeout(renderNow, 250);
}

function renderNow() {
  if (!renderPending) return;
  renderPending = false;
  table.flush();
  renderRun();
}

// The live region says what changed in the run's state; the per-invoice
// numbers stay out of it so a screen reader is not flooded.
function statusSentence(run) {
  const total = run.total ?? "?";
  const done = run.finalCount ?? run.cancelResult?.invoicesIssued ?? run.current;
  switch (run.status) {
    case "pending": return "Pending: waiting to start.";
    case "running": return isWaiting(run)
      ? `Waiting for approval after ${run.reviewed} of ${total} invoices.`
      : "Running.";
    case "completed":
      return `Completed: ${done} of ${total} invoices ${run.info?.kind === "correction" ? "corrected" : "issued"}.`;
    case "cancelled": return `Cancelled after ${done} of ${total} invoices.`;
    case "failed": {
      const why = run.errorMessage || run.info?.error || "unknown error";
      return `Failed after ${done} of ${total} invoices: ${why}`;
    }
    case "unknown": return "Run not found.";
    default: return "Loading…";
  }
}

function renderRun() {
  const run = current;
  view["run-empty"].hidden = Boolean(run);
  view["run-body"].hidden = !run;
  const badge = view["run-badge"];
  if (!run) {
    badge.hidden = true;
    view["run-panel"].dataset.status = "none";
    return;
  }
  const status = run.status || "loading";
  const info = run.info || {};
  view["run-panel"].dataset.status = status;
  badge.hidden = false;
  badge.dataset.status = isWaiting(run) ? "waiting" : status;
  badge.textContent = isWaiting(run) ? "waiting for approval" : status;
  banner.render(isWaiting(run) ? { runId: run.runId, current: run.reviewed, total: Number(run.total) || 0 } : null);

  view["run-id"].textContent = run.runId;
  view["run-account"].textContent = info.accountId || "—";
  view["run-delay"].textContent = info.delay ?? "—";
  view["run-prices"].textContent = typeof info.priceVersion === "number" ? `v${info.priceVersion}` : "—";
  view["run-corrects-fact"].hidden = !info.correctsRunId;
  if (info.correctsRunId) {
    view["run-corrects"].textContent = info.correctsRunId;
    view["run-corrects"].href = `#run=${encodeURIComponent(info.correctsRunId)}`;
  }
  setTime(view["run-created"], info.createdAt);
  setTime(view["run-started"], info.startedAt);
  setTime(view["run-completed"], info.completedAt);
  const took = elapsed(info.startedAt, info.completedAt);
  if (took) view["run-completed"].textContent += ` (${took})`;

  const total = Number(run.total) || 0;
  const done = Math.max(run.current, run.finalCount ?? 0);
  const progress = view.progress;
  progress.max = Math.max(total, 1);
  progress.value = Math.min(done, progress.max);
  view["progress-text"].textContent = `${done} / ${total || "?"}`;

  const sentence = statusSentence(run);
  if (view["run-status"].textContent !== sentence) view["run-status"].textContent = sentence;

  const cancel = view["cancel-button"];
  const cancellable = status === "pending" || status === "running";
  cancel.hidden = !cancellable;
  if (!cancellable) {
    cancel.disabled = false;
    cancel.textContent = "Cancel batch";
  }

  const csv = view["csv-link"];
  csv.hidden = !(TERMINAL.has(status) && (done > 0 || table.count > 0));
  csv.href = csvUrl(run.runId);
  csv.download = `invoices-${run.runId}.csv`;
  csv.textContent = status === "cancelled"
    ? `Download CSV of the ${plural(done, "issued invoice")}`
    : "Download CSV of issued invoices";
  correction.setRun(run.runId, status);
}

function isWaiting(run) {
  return run.reviewed !== null && run.status === "running";
}

/** The answer of a cancel (or a rejection), whose count is final, shown at once. */
function showCancelled(run, result) {
  run.cancelResult = result;
  run.status = "cancelled";
  run.reviewed = null;
  if (typeof result.invoicesIssued === "number") {
    run.finalCount = result.invoicesIssued;
    run.current = Math.max(run.current, result.invoicesIssued);
  }
  renderRun();
  // The buttons are gone now; keep keyboard focus somewhere useful.
  if (view["csv-link"].hidden) view["run-panel"].focus();
  else view["csv-link"].focus();
  refreshStatus(run);
  runHistory.refresh();
}

async function approveCurrent() {
  const run = current;
  if (!run) return;
  banner.busy("approve");
  try {
    const info = await api.approve(run.runId);
    if (!isCurrent(run)) return;
    run.info = info;
    run.reviewed = null;
    run.approved = true;
    renderRun();
    view["run-panel"].focus();
    runHistory.refresh();
  } catch (err) {
    if (!isCurrent(run)) return;
    banner.failed(`Not approved: ${err.message}`);
    refreshStatus(run);
  }
}

async function rejectCurrent() {
  const run = current;
  if (!run) return;
  banner.busy("reject");
  try {
    const result = await api.reject(run.runId);
    if (isCurrent(run)) showCancelled(run, result);
  } catch (err) {
    if (!isCurrent(run)) return;
    banner.failed(`Not rejected: ${err.message}`);
    refreshStatus(run);
  }
}

async function cancelCurrent() {
  const run = current;
  if (!run) return;
  const button = view["cancel-button"];
  button.disabled = true;
  button.textContent = "Cancelling…";
  showError(null);
  try {
    const result = await api.cancel(run.runId);
    if (isCurrent(run)) showCancelled(run, result);
  } catch (err) {
    if (!isCurrent(run)) return;
    button.disabled = false;
    button.textContent = "Cancel batch";
    showError(err instanceof ApiError && err.status === 409
      ? `Not cancelled: ${err.message}`
      : `Cancel failed: ${err.message}`);
    refreshStatus(run);
  }
}

function showError(message) {
  const el = view["run-error"];
  el.textContent = message || "";
  el.hidden = !message;
}

// ---------------------------------------------------------------- history

const runHistory = new RunHistory({
  list: $("history"),
  empty: $("history-empty"),
  error: $("history-error"),
  selectedRunId: () => current?.runId ?? null,
});

// ---------------------------------------------------------------- boot

function onHashChange() {
  const runId = runIdFromHash();
  if (ownHash === location.hash) {
    ownHash = null;
    return;
  }
  if (runId) {
    selectRun(runId);
    view["run-panel"].focus({ preventScroll: false });
  }
}

function startPricePanel() {
  const panel = new PricePanel({
    select: $("price-version"),
    meta: $("prices-meta"),
    status: $("prices-status"),
    error: $("prices-error"),
    form: $("prices-form"),
    taxField: $("tax-field"),
    tax: $("tax-rate"),
    rows: $("price-rows"),
    edit: $("prices-edit"),
    save: $("prices-save"),
    discard: $("prices-discard"),
    latest: $("prices-latest"),
  });
  panel.start();
  window.addEventListener("invoices:token", () => {
    if (!panel.shown) panel.show(null);
  });
  window.addEventListener("invoices:prices", () => correction.pricesChanged());
}

function boot() {
  setupTokenPrompt();
  initView();
  form.init();
  startPricePanel();
  $("history-refresh").addEventListener("click", () => {
    allowTokenPrompt();
    runHistory.refresh();
    if (current && current.follower.state === "closed" && !TERMINAL.has(current.status)) reselect();
  });
  runHistory.start();
  window.addEventListener("hashchange", onHashChange);
  window.addEventListener("invoices:token", () => {
    if (current) current.follower.retryNow();
    runHistory.refresh();
  });
  const runId = runIdFromHash();
  if (runId) selectRun(runId);
  else renderRun();
  document.documentElement.dataset.ready = "true";
}

boot();
