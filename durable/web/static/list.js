// The run list: filters in the URL, rows refreshed every POLL_MS, older pages on demand.

import { api } from "./api.js";
import { badge, el, localTime, span } from "./format.js";

const POLL_MS = 2000;
const PAGE = 50;
const $ = (id) => document.getElementById(id);

const state = { status: "", workflow: "", shown: PAGE, next: null, timer: null };

function query(limit) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (state.status) params.set("status", state.status);
  if (state.workflow) params.set("workflow", state.workflow);
  return params;
}

function row(run) {
  const link = el("a", { href: `run?id=${encodeURIComponent(run.run_id)}` }, el("code", {}, run.run_id));
  const error = run.error ? run.error.split("\n")[0] : "";
  return el("tr", { dataset: { runId: run.run_id, status: run.status } },
    el("td", {}, link),
    el("td", {}, run.workflow_name),
    el("td", {}, badge(run.status)),
    el("td", {}, el("time", { datetime: run.created_at }, localTime(run.created_at))),
    el("td", { class: "num" }, span(run.started_at, run.completed_at)),
    el("td", { class: "error-cell", title: error || null }, error));
}

function render(page) {
  $("run-rows").replaceChildren(...page.runs.map(row));
  $("runs-empty").hidden = page.runs.length > 0;
  $("more-button").hidden = page.next === null;
  state.next = page.next;
  $("list-updated").textContent = `Updated ${localTime(new Date().toISOString()).slice(11, 19)}`;
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    render(await api.runs(query(state.shown)));
    $("list-error").hidden = true;
  } catch (err) {
    $("list-error").textContent = err.message;
    $("list-error").hidden = false;
  } finally {
    document.documentElement.dataset.ready = "true";
    state.timer = setTimeout(refresh, POLL_MS);
  }
}

async function loadWorkflows() {
  try {
    const { workflows } = await api.workflows();
    const select = $("workflow-filter");
    for (const name of workflows) select.append(el("option", { value: name }, name));
    select.value = state.workflow;
  } catch {
    // the list itself reports what is wrong
  }
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.status = params.get("status") || "";
  state.workflow = params.get("workflow") || "";
  $("status-filter").value = state.status;
}

function onFilter() {
  state.status = $("status-filter").value;
  state.workflow = $("workflow-filter").value;
  state.shown = PAGE;
  const params = query(PAGE);
  params.delete("limit");
  history.replaceState(null, "", params.toString() ? `?${params}` : location.pathname);
  refresh();
}

readUrl();
$("filters").addEventListener("change", onFilter);
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("more-button").addEventListener("click", () => {
  state.shown += PAGE;
  refresh();
});
await loadWorkflows();
refresh();
