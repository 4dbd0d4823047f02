// A run's timeline as SVG bars on one time axis: a row per operation, a bar per
// attempt (red when it failed, its error on hover), sleeps, hooks and children,
// and dashed retry waits between attempts. Colours are SVG attributes, not
// inline styles, so the page's CSP needs no 'unsafe-inline'.

import { humanize, localTime, ms } from "./format.js";

export const COLORS = { completed: "#2f855a", failed: "#d64545", sleep: "#7b8794", other: "#805ad5", wait: "#a0aec0" };
export const MAX_OPS = 2000;
const LABEL_W = 240;
const ROW_H = 26;
const BAR_H = 16;
const AXIS_H = 28;
const PAD_R = 20;
const NICE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5,
  18e5, 36e5, 72e5, 144e5, 432e5, 864e5, 1728e5, 6048e5];
const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function stepBars(op, end) {
  const bars = [];
  const waits = [];
  op.attempts.forEach((a, i) => {
    bars.push({ start: ms(a.started_at), end: ms(a.ended_at), outcome: a.error ? "failed" : "completed", attempt: a.attempt, error: a.error });
    const next = op.attempts[i + 1];
    if (next) waits.push({ start: ms(a.ended_at), end: ms(next.started_at) });
  });
  const last = op.attempts[op.attempts.length - 1];
  if (op.status === "retrying" && last) waits.push({ start: ms(last.ended_at), end: Math.min(ms(op.wake_at) ?? end, end) });
  return { bars, waits };
}

/** The bars and waits of one operation; ``end`` is where unfinished things stop (the run's end, or now). */
export function operationBars(op, end) {
  if (op.kind === "step" && op.attempts.length) return stepBars(op, end);
  const start = ms(op.started_at);
  if (op.kind === "sleep") {
    const wake = ms(op.wake_at);
    return { bars: [{ start, end: Math.min(wake, Math.max(end, start)), outcome: "sleep", wake }], waits: [] };
  }
  return { bars: [{ start, end: ms(op.completed_at) ?? end, outcome: "other" }], waits: [] };
}

function niceStep(spanMs, maxTicks) {
  return NICE.find((step) => spanMs / step <= maxTicks) ?? NICE[NICE.length - 1];
}

function tip(op, bar) {
  const lines = [`${op.kind} ${op.seq} · ${op.name}`];
  if (bar.attempt !== undefined) lines.push(`attempt ${bar.attempt}`);
  lines.push(`started ${localTime(new Date(bar.start).toISOString())} · ${humanize(bar.end - bar.start)}`);
  if (bar.wake) lines.push(`wakes ${localTime(new Date(bar.wake).toISOString())}`);
  if (bar.error) lines.push(bar.error);
  if (op.kind === "child") lines.push(`child run ${op.status} · click to open it`);
  return lines.join("\n");
}

function axis(svg, t0, t1, x, width) {
  const step = niceStep(t1 - t0, Math.max(2, Math.floor((width - LABEL_W) / 110)));
  for (let t = 0; t0 + t <= t1; t += step) {
    const at = x(t0 + t);
    svg.append(svgEl("line", { x1: at, x2: at, y1: AXIS_H - 6, y2: "100%", stroke: "#e2e6ea", "stroke-width": 1 }));
    if (at > width - 64) continue; // no room for its label at the right edge
    const label = svgEl("text", { x: at + 3, y: AXIS_H - 10, class: "tick", fill: "#59636e" });
    label.textContent = t === 0 ? "0" : `+${humanize(t)}`;
    svg.append(label);
  }
}

function rowLabel(op, y) {
  const text = svgEl("text", { x: 8, y: y + BAR_H - 3, class: "row-label", fill: "#1b1f24" });
  const name = op.name.length > 26 ? `${op.name.slice(0, 25)}…` : op.name;
  text.textContent = `${op.seq}  ${op.kind === "step" ? "" : `${op.kind} `}${name}`;
  return text;
}

function bindTooltip(node, tooltip, text) {
  const show = (event) => {
    tooltip.textContent = text;
    tooltip.hidden = false;
    const box = node.getBoundingClientRect();
    const left = event && event.clientX ? event.clientX : box.left + box.width / 2;
    tooltip.style.left = `${Math.round(left + window.scrollX + 12)}px`;
    tooltip.style.top = `${Math.round(box.bottom + window.scrollY + 6)}px`;
  };
  const hide = () => { tooltip.hidden = true; };
  node.addEventListener("mouseenter", show);
  node.addEventListener("mousemove", show);
  node.addEventListener("mouseleave", hide);
  node.addEventListener("focus", () => show(null));
  node.addEventListener("blur", hide);
}

/** Draw ``run.timeline`` into ``svg``; ``now`` (ms) ends what has not ended; a child's bar opens it. Returns the number of bars. */
export function drawTimeline(svg, tooltip, run, now, openChild) {
  const ops = run.timeline.slice(0, MAX_OPS);
  const end = ms(run.completed_at) ?? now;
  const rows = ops.map((op) => ({ op, ...operationBars(op, end) }));
  const times = rows.flatMap((r) => [...r.bars, ...r.waits].flatMap((b) => [b.start, b.end]));
  const t0 = Math.min(...times, ms(run.started_at) ?? now);
  const t1 = Math.max(...times, t0 + 1);
  const width = Math.max(640, svg.parentElement.clientWidth);
  const x = (t) => LABEL_W + ((t - t0) / (t1 - t0)) * (width - LABEL_W - PAD_R);
  svg.replaceChildren();
  svg.setAttribute("width", width);
  svg.setAttribute("height", AXIS_H + rows.length * ROW_H + 4);
  svg.setAttribute("viewBox", `0 0 ${width} ${AXIS_H + rows.length * ROW_H + 4}`);
  axis(svg, t0, t1, x, width);
  let count = 0;
  rows.forEach(({ op, bars, waits }, i) => {
    const y = AXIS_H + i * ROW_H + (ROW_H - BAR_H) / 2;
    svg.append(rowLabel(op, y));
    for (const w of waits) {
      svg.append(svgEl("line", { x1: x(w.start), x2: x(w.end), y1: y + BAR_H / 2, y2: y + BAR_H / 2, stroke: COLORS.wait,
        "stroke-width": 2, "stroke-dasharray": "4 3", class: "wait" }));
    }
    for (const bar of bars) {
      const left = x(bar.start);
      const rect = svgEl("rect", { x: left, y, width: Math.max(4, x(bar.end) - left), height: BAR_H, rx: 2,
        fill: COLORS[bar.outcome], class: `bar ${bar.outcome}`, tabindex: 0, "data-seq": op.seq, "data-kind": op.kind,
        "data-outcome": bar.outcome, "data-attempt": bar.attempt ?? "" });
      const text = tip(op, bar);
      rect.setAttribute("aria-label", text.replaceAll("\n", "; "));
      bindTooltip(rect, tooltip, text);
      if (op.kind === "child") {
        rect.classList.add("link");
        rect.addEventListener("click", () => openChild(op.seq));
        rect.addEventListener("keydown", (event) => { if (event.key === "Enter") openChild(op.seq); });
      }
      svg.append(rect);
      count += 1;
    }
  });
  return count;
}
