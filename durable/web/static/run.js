// A run's page: its facts, cancel/resume/fork with a confirmation, its timeline
// (redrawn while the run moves), its streams followed live, its hooks.

import { api, streamUrl } from "./api.js";
import { TERMINAL, badge, el, localTime, span } from "./format.js";
import { MAX_OPS, drawTimeline } from "./timeline.js";

const POLL_MS = 1000;
const MAX_CHUNKS = 1000;
const $ = (id) => document.getElementById(id);
const runId = new URLSearchParams(location.search).get("id") || "";

const state = { run: null, timer: null, source: null, namespace: null, next: 0 };

// ---------------------------------------------------------------- facts

function fact(label, ...value) {
  return el("div", {}, el("dt", {}, label), el("dd", {}, ...value));
}

function json(value) {
  return el("code", { class: "value" }, JSON.stringify(value));
}

function renderFacts(run) {
  const rows = [
    fact("Workflow", run.workflow_name),
    fact("Created", localTime(run.created_at)),
    fact("Started", localTime(run.started_at)),
    fact("Completed", localTime(run.completed_at)),
    fact("Duration", span(run.started_at, run.completed_at)),
    fact("Input", json({ args: run.args, kwargs: run.kwargs })),
  ];
  if (run.parent_run_id) {
    rows.push(fact("Parent", el("a", { href: `run?id=${encodeURIComponent(run.parent_run_id)}`, id: "parent-link" }, run.parent_run_id)));
  }
  if (run.forked_from) {
    const link = el("a", { href: `run?id=${encodeURIComponent(run.forked_from)}`, id: "forked-from" }, run.forked_from);
    rows.push(fact("Forked from", link, ` at step ${run.forked_at_seq}`));
  }
  if (run.output !== null) rows.push(fact("Output", json(run.output)));
  if (run.error) {
    const stack = run.error_stack
      ? el("details", { class: "stack" }, el("summary", {}, "Traceback"), el("pre", { id: "run-error-stack" }, run.error_stack))
      : null;
    rows.push(fact("Error", el("pre", { class: "run-error-text", id: "run-error-text" }, run.error), stack));
  }
  $("facts").replaceChildren(...rows);
  const status = $("run-status");
  status.textContent = run.status;
  status.dataset.status = run.status;
  $("cancel-button").hidden = TERMINAL.has(run.status);
  $("resume-button").hidden = !(run.status === "failed" || run.status === "cancelled");
}

// ---------------------------------------------------------------- timeline

function renderTimeline(run) {
  const count = drawTimeline($("timeline"), $("tooltip"), run, Date.now(), (seq) => {
    location.assign(`run?id=${encodeURIComponent(`${run.run_id}~${seq}`)}`); // a child's id: its parent's and its seq
  });
  $("timeline").dataset.bars = String(count);
  const note = $("timeline-note");
  note.hidden = run.timeline.length > 0 && run.timeline.length <= MAX_OPS;
  note.textContent = run.timeline.length === 0
    ? "Nothing journaled yet."
    : `Showing the first ${MAX_OPS} of ${run.timeline.length} operations; python -m durable inspect run lists them all.`;
}

// ---------------------------------------------------------------- streams

function streamState(text, value) {
  const node = $("stream-state");
  node.textContent = text;
  node.dataset.stream = value;
}

function addChunk(index, value) {
  const list = $("chunks");
  list.append(el("li", { dataset: { index: String(index) } }, el("span", { class: "index" }, String(index)), json(value)));
  while (list.children.length > MAX_CHUNKS) list.firstElementChild.remove();
  $("chunks-empty").hidden = true;
}

function follow(namespace, from) {
  if (state.source) state.source.close();
  state.namespace = namespace;
  state.next = from;
  const source = new EventSource(streamUrl(runId, namespace, from));
  state.source = source;
  streamState("live", "open");
  source.onmessage = (event) => {
    const chunk = JSON.parse(event.data);
    addChunk(chunk.index, chunk.value);
    state.next = chunk.index + 1;
  };
  source.addEventListener("end", () => {
    source.close();
    streamState("ended", "closed");
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) streamState("disconnected", "closed");
  };
}

function setupNamespaces(run) {
  const names = run.streams.map((s) => s.namespace);
  if (!names.includes("")) names.unshift("");
  const select = $("namespace");
  if (select.options.length !== names.length) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n || "(default)")));
    select.value = state.namespace ?? "";
  }
  $("namespace-label").hidden = names.length < 2;
}

// ---------------------------------------------------------------- hooks

function hookItem(hook) {
  const token = String(hook.token ?? "");
  const area = el("textarea", { rows: 2, "aria-label": `Payload for hook ${token}`, spellcheck: "false" }, "{}");
  const message = el("p", { class: "muted", role: "status" });
  const form = el("form", { class: "hook-form", dataset: { token } }, area,
    el("button", { class: "button", type: "submit" }, "Resume hook"), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.resumeHook(token, JSON.parse(area.value));
      message.textContent = "Payload delivered.";
    } catch (err) {
      message.textContent = err instanceof SyntaxError ? "The payload must be JSON." : err.message;
    }
  });
  const meta = hook.metadata === undefined ? "" : JSON.stringify(hook.metadata);
  return el("li", {}, el("code", {}, token), el("span", { class: "muted" }, ` ${localTime(hook.created_at)} ${meta}`), form);
}

function renderHooks(run) {
  const known = [...$("hooks").children].map((li) => li.querySelector("form").dataset.token).join("\n");
  if (known === run.hooks.map((h) => String(h.token ?? "")).join("\n")) return; // keep what a person types
  $("hooks").replaceChildren(...run.hooks.map(hookItem));
  $("hooks-empty").hidden = run.hooks.length > 0;
}

// ---------------------------------------------------------------- actions

const ACTIONS = {
  cancel: {
    title: "Cancel this run?",
    text: "Steps in flight finish and keep their result; no further step starts.",
    ok: "Cancel run",
    run: () => api.cancel(runId),
  },
  resume: {
    title: "Resume this run?",
    text: "It continues after its last completed step; a step that failed runs again from its first attempt.",
    ok: "Resume run",
    run: () => api.resume(runId),
  },
  fork: {
    title: "Fork this run?",
    text: "A new run starts with the same input and this run's journal before the step you choose.",
    ok: "Fork run",
    run: () => api.fork(runId, Number($("fork-seq").value)),
  },
};

function defaultForkSeq(run) {
  const failed = run.timeline.find((op) => op.status === "failed");
  if (failed) return failed.seq;
  return run.timeline.length ? run.timeline[run.timeline.length - 1].seq : 0;
}

function confirm(kind) {
  const action = ACTIONS[kind];
  const dialog = $("confirm-dialog");
  $("confirm-heading").textContent = action.title;
  $("confirm-text").textContent = action.text;
  $("confirm-ok").textContent = action.ok;
  $("fork-field").hidden = kind !== "fork";
  $("confirm-error").hidden = true;
  if (kind === "fork") $("fork-seq").value = String(defaultForkSeq(state.run));
  dialog.returnValue = "";
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok") act(kind);
  }, { once: true });
  dialog.showModal();
}

async function act(kind) {
  const message = $("action-message");
  message.textContent = `${ACTIONS[kind].ok}…`;
  try {
    const answer = await ACTIONS[kind].run();
    if (kind === "fork") {
      location.assign(`run?id=${encodeURIComponent(answer.run_id)}`);
      return;
    }
    message.textContent = kind === "cancel" ? `Cancelled (was ${answer.previous_status}).` : `Resumed (was ${answer.previous_status}).`;
    await refresh();
    if (kind === "resume") {
      // Resuming drops the chunks written after the last completed step: read the stream afresh.
      $("chunks").replaceChildren();
      follow(state.namespace ?? "", 0);
    }
  } catch (err) {
    message.textContent = err.message;
  }
}

// ---------------------------------------------------------------- loading

async function refresh() {
  clearTimeout(state.timer);
  try {
    const run = await api.run(runId);
    state.run = run;
    renderFacts(run);
    renderTimeline(run);
    setupNamespaces(run);
    renderHooks(run);
    $("run-error").hidden = true;
    if (!TERMINAL.has(run.status)) state.timer = setTimeout(refresh, POLL_MS);
  } catch (err) {
    $("run-error").textContent = err.message;
    $("run-error").hidden = false;
    if (err.status !== 404) state.timer = setTimeout(refresh, POLL_MS);
  }
}

$("run-id").textContent = runId;
document.title = `Run ${runId}`;
for (const kind of Object.keys(ACTIONS)) $(`${kind}-button`).addEventListener("click", () => confirm(kind));
$("namespace").addEventListener("change", () => {
  $("chunks").replaceChildren();
  $("chunks-empty").hidden = false;
  follow($("namespace").value, 0);
});
window.addEventListener("resize", () => state.run && renderTimeline(state.run));
await refresh();
if (state.run) follow("", 0);
document.documentElement.dataset.ready = "true";
