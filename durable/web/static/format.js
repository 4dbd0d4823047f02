// How the inspector shows times and durations (the same as `python -m durable`).

/** "350 ms", "1.2 s", "5 m 3 s", "2 h 5 m", "3 d 4 h". */
export function humanize(ms) {
  const rounded = Math.max(0, Math.round(ms));
  if (rounded < 1000) return `${rounded} ms`;
  if (rounded < 59950) return `${(rounded / 1000).toFixed(1)} s`;
  const total = Math.round(ms / 1000);
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${minutes} m`;
  return `${minutes} m ${seconds} s`;
}

/** Milliseconds since the epoch of an ISO time, or null. */
export function ms(iso) {
  return iso ? Date.parse(iso) : null;
}

/** "2026-12-01 21:00:00.123" in the browser's time zone. */
export function localTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function span(startIso, endIso) {
  if (!startIso || !endIso) return "—";
  return humanize(ms(endIso) - ms(startIso));
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** An element with attributes and children (text or nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function badge(status) {
  return el("span", { class: "badge", "data-status": status }, status);
}
