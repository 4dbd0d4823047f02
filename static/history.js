// Recent runs from GET /api/runs, as links to #run=<id>, polled while the tab
// is visible. Entries are updated in place so keyboard focus survives a poll.

import { api } from "./api.js";
import { shortTime } from "./format.js";

const HISTORY_LIMIT = 20;
const HISTORY_POLL_MS = 5000;

export class RunHistory {
  /**
   * @param {{list: HTMLElement, empty: HTMLElement, error: HTMLElement,
   *          selectedRunId(): string|null}} options
   */
  constructor({ list, empty, error, selectedRunId }) {
    this.list = list;
    this.emptyEl = empty;
    this.errorEl = error;
    this.selectedRunId = selectedRunId;
    this.items = new Map();
    this.timer = null;
    this.inflight = null;
    this.again = false;
  }

  start() {
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
    this.refresh();
  }

  refresh() {
    if (this.inflight) {
      // The answer in flight may predate what prompted this call: ask again after it.
      this.again = true;
      return this.inflight;
    }
    this.again = false;
    // A hidden tab does not poll; becoming visible refreshes at once.
    const work = document.hidden ? Promise.resolve() : this.load();
    this.inflight = work.finally(() => {
      this.inflight = null;
      clearTimeout(this.timer);
      if (this.again) this.refresh();
      else this.timer = setTimeout(() => this.refresh(), HISTORY_POLL_MS);
    });
    return this.inflight;
  }

  async load() {
    try {
      const { runs } = await api.runs(HISTORY_LIMIT);
      this.errorEl.hidden = true;
      this.render(runs || []);
    } catch (err) {
      this.errorEl.hidden = false;
      this.errorEl.textContent = `Could not load runs: ${err.message}`;
    }
  }

  render(runs) {
    this.emptyEl.hidden = runs.length > 0;
    const keep = new Set();
    runs.forEach((run, i) => {
      keep.add(run.runId);
      let li = this.items.get(run.runId);
      if (!li) {
        li = this.createItem(run.runId);
        this.items.set(run.runId, li);
      }
      this.fill(li, run);
      // Move only when the order changed, so a focused link keeps focus.
      if (this.list.children[i] !== li) this.list.insertBefore(li, this.list.children[i] || null);
    });
    for (const [runId, li] of this.items) {
      if (!keep.has(runId)) {
        li.remove();
        this.items.delete(runId);
      }
    }
    this.markSelected(this.selectedRunId());
  }

  createItem(runId) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "history-item";
    a.href = `#run=${encodeURIComponent(runId)}`;
    a.dataset.runId = runId;
    const badge = document.createElement("span");
    badge.className = "badge";
    const account = document.createElement("span");
    account.className = "history-account";
    const count = document.createElement("span");
    count.className = "history-count";
    const when = document.createElement("time");
    when.className = "history-time";
    a.append(badge, account, count, when);
    li.append(a);
    return li;
  }

  fill(li, run) {
    const [badge, account, count, when] = li.firstElementChild.children;
    const waiting = run.waitingFor === "approval";
    badge.dataset.status = waiting ? "waiting" : run.status;
    badge.textContent = waiting ? "waiting" : run.status;
    // A correction run names what it is: its counts are invoices corrected, not issued.
    const what = run.kind === "correction" ? "correction" : "batch";
    account.textContent = what === "correction" ? `${run.accountId ?? "—"} · correction` : (run.accountId ?? "—");
    const done = typeof run.current === "number" ? `${run.current} / ${run.total}` : `${run.total}`;
    count.textContent = done;
    when.dateTime = run.createdAt || "";
    when.textContent = shortTime(run.createdAt);
    const label = what === "correction" ? `${run.accountId} correction` : run.accountId;
    li.firstElementChild.setAttribute("aria-label",
      `${label}, ${waiting ? "waiting for approval" : run.status}, ${done} invoices${what === "correction" ? " corrected" : ""}, created ${shortTime(run.createdAt)}`);
  }

  markSelected(runId) {
    for (const [id, li] of this.items) {
      const a = li.firstElementChild;
      if (id === runId) a.setAttribute("aria-current", "true");
      else a.removeAttribute("aria-current");
    }
  }
}
