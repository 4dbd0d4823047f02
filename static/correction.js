// The correction block of the selected run: once the run has ended with
// invoices priced at a superseded price list, a "Correct N invoices" button
// starts a correction run (POST /api/runs/<id>/correct); its stream is
// followed live like a batch's, each corrected invoice struck through in the
// invoice table with links to its credit note and replacement. What is shown
// comes from GET /api/runs/<id>/corrections, read again whenever a correction
// ends or the price list changes.

import { api, ApiError, correctionsCsvUrl, downloadFile, getToken } from "./api.js";
import { RunFollower, TERMINAL_EVENTS } from "./stream.js";
import { plural } from "./format.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const PAIR_EVENTS = new Set(["correction", "reverted", "skipped"]);

export class CorrectionPanel {
  /**
   * @param {Record<string, HTMLElement>} els the block's elements
   * @param {{table: import("./table.js").InvoiceTable, onChange(): void}} options
   */
  constructor(els, { table, onChange }) {
    this.els = els;
    this.table = table;
    this.onChange = onChange;
    this.runId = null;
    this.info = null; // the last GET /api/runs/<id>/corrections
    this.active = null; // { runId, total, current, corrected, status, message, follower }
    this.loadSeq = 0;
    els.correct.addEventListener("click", () => this.start());
    els.cancel.addEventListener("click", () => this.cancel());
    els.csv.addEventListener("click", (event) => {
      if (!this.runId || !getToken()) return; // a plain link works without a token
      event.preventDefault();
      downloadFile(correctionsCsvUrl(this.runId), `corrections-${this.runId}.csv`).catch((err) => this.showError(err.message));
    });
  }

  /** The panel shows run `runId`, whose status is `status` (null while unknown). */
  setRun(runId, status) {
    if (runId !== this.runId) this.reset(runId);
    if (runId === null) return;
    if (TERMINAL.has(status) && this.info === null && this.loadSeq === 0) this.load();
  }

  reset(runId) {
    this.stopFollowing();
    this.runId = runId;
    this.info = null;
    this.active = null;
    this.loadSeq = 0;
    this.table.setCorrections([]);
    this.showError(null);
    this.render();
  }

  /** Read the run's corrections again (after a price change, or when a correction ended). */
  async load() {
    const runId = this.runId;
    if (runId === null) return;
    const seq = ++this.loadSeq;
    try {
      const info = await api.corrections(runId);
      if (runId !== this.runId || seq !== this.loadSeq) return;
      this.info = info;
      this.table.setCorrections(info.corrections);
      const running = info.correctionRuns.find((run) => !TERMINAL.has(run.status));
      if (running && !this.active) this.follow(running.runId, running.total);
      this.render();
    } catch (err) {
      if (runId === this.runId && err instanceof ApiError && err.status !== 404) this.showError(err.message);
    }
  }

  /** The price list changed: the number of invoices to correct may have too. */
  pricesChanged() {
    if (this.info !== null) this.load();
  }

  async start() {
    const runId = this.runId;
    const button = this.els.correct;
    button.disabled = true;
    this.showError(null);
    try {
      const started = await api.correct(runId);
      if (runId !== this.runId) return;
      this.follow(started.correctionRunId, started.toCorrect);
      this.onChange();
    } catch (err) {
      if (runId !== this.runId) return;
      this.showError(`Not started: ${err.message}`);
      this.load();
    } finally {
      button.disabled = false;
      this.render();
    }
  }

  follow(correctionRunId, total) {
    this.stopFollowing();
    const active = {
      runId: correctionRunId, total, current: 0, corrected: 0, status: "running", message: null, follower: null,
    };
    this.active = active;
    active.follower = new RunFollower(correctionRunId, {
      onEvent: (index, data) => this.onEvent(active, data),
      onState: (state) => {
        if (this.active === active) this.els.block.dataset.stream = state;
      },
      onDrop: () => api.status(correctionRunId).then((info) => info.status),
    });
    active.follower.start();
    this.render();
  }

  stopFollowing() {
    if (this.active?.follower) this.active.follower.stop();
  }

  onEvent(active, data) {
    if (this.active !== active || !data || typeof data !== "object") return;
    if (typeof data.total === "number") active.total = data.total;
    if (PAIR_EVENTS.has(data.type)) {
      active.current = Math.max(active.current, data.current);
      if (data.type === "correction") {
        active.corrected += 1;
        this.table.markCorrection({
          invoiceId: data.invoiceId, creditNoteId: data.creditNoteId, replacementId: data.replacementId, status: "corrected",
        });
      }
    } else if (TERMINAL_EVENTS.has(data.type)) {
      active.status = { complete: "completed", cancelled: "cancelled", error: "failed" }[data.type];
      active.current = data.current;
      active.corrected = data.invoicesCorrected;
      active.message = data.message;
      this.load();
      this.onChange();
    }
    this.render();
  }

  async cancel() {
    const active = this.active;
    if (!active) return;
    this.els.cancel.disabled = true;
    try {
      const result = await api.cancel(active.runId);
      if (this.active !== active) return;
      active.corrected = result.invoicesCorrected;
      active.status = "cancelled";
    } catch (err) {
      this.showError(`Not cancelled: ${err.message}`);
    } finally {
      this.els.cancel.disabled = false;
      this.render();
    }
  }

  sentence() {
    const active = this.active;
    if (!active) return "";
    const done = `${active.corrected} of ${active.total}`;
    switch (active.status) {
      case "running": return `Correcting: ${done} invoices corrected so far.`;
      case "completed": return `Corrected ${done} invoices: each has a credit note and a replacement at the current prices.`;
      case "cancelled": return `Correction cancelled after ${done} invoices.`;
      default: return `Correction failed after ${done} invoices: ${active.message || "unknown error"}`;
    }
  }

  render() {
    const { block, summary, correct, cancel, csv, progressBlock, progress, progressText, status } = this.els;
    const info = this.info;
    const active = this.active;
    // Nothing to show for a run whose invoices are all at the current prices and were never corrected.
    block.hidden = active === null && (info === null || (info.toCorrect === 0 && info.count === 0));
    const running = active !== null && active.status === "running";
    block.dataset.state = running ? "running" : (active?.status ?? "idle");
    const toCorrect = info?.toCorrect ?? 0;
    correct.hidden = running || toCorrect === 0;
    correct.textContent = `Correct ${plural(toCorrect, "invoice")}`;
    cancel.hidden = !running;
    summary.textContent = info === null ? "" : summaryText(info);
    progressBlock.hidden = active === null;
    if (active) {
      progress.max = Math.max(active.total || 0, 1);
      progress.value = Math.min(active.current, progress.max);
      progressText.textContent = `${active.current} / ${active.total ?? "?"}`;
    }
    const sentence = this.sentence();
    if (status.textContent !== sentence) status.textContent = sentence;
    csv.hidden = !info || info.count === 0;
    if (this.runId) {
      csv.href = correctionsCsvUrl(this.runId);
      csv.download = `corrections-${this.runId}.csv`;
    }
  }

  showError(message) {
    this.els.error.textContent = message || "";
    this.els.error.hidden = !message;
  }
}

function summaryText(info) {
  const parts = [];
  if (info.toCorrect > 0) {
    parts.push(`${plural(info.toCorrect, "invoice")} of this run ${info.toCorrect === 1 ? "is" : "are"} priced at a`
      + ` superseded price list; the current one is v${info.priceVersion}.`);
  }
  const corrected = info.corrections.filter((c) => c.status === "corrected").length;
  if (corrected > 0) parts.push(`${plural(corrected, "invoice")} voided and replaced.`);
  const reverted = info.corrections.filter((c) => c.status === "reverted").length;
  if (reverted > 0) parts.push(`${plural(reverted, "correction")} rolled back (credit note reverted).`);
  if (info.toCorrect === 0) parts.push(`Every invoice is at the current price list (v${info.priceVersion}) or corrected.`);
  return parts.join(" ");
}
