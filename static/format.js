// Formatting of amounts, times and durations for display.

const moneyFormats = new Map();

function moneyFormat(currency) {
  let fmt = moneyFormats.get(currency);
  if (!fmt) {
    try {
      fmt = new Intl.NumberFormat(undefined, { style: "currency", currency });
    } catch {
      fmt = null;
    }
    moneyFormats.set(currency, fmt);
  }
  return fmt;
}

/** Format an integer amount in minor units (cents) of `currency`. */
export function formatMoney(minorUnits, currency) {
  if (typeof minorUnits !== "number" || !Number.isFinite(minorUnits)) return "—";
  const code = typeof currency === "string" && currency ? currency.toUpperCase() : "USD";
  const fmt = moneyFormat(code);
  if (!fmt) return `${(minorUnits / 100).toFixed(2)} ${code}`;
  const digits = fmt.resolvedOptions().maximumFractionDigits;
  return fmt.format(minorUnits / 10 ** digits);
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

const shortTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});

/** Fill a <time> element from an ISO 8601 string or null. */
export function setTime(el, iso) {
  if (!iso) {
    el.textContent = "—";
    el.removeAttribute("datetime");
    el.removeAttribute("title");
    return;
  }
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    el.textContent = iso;
    return;
  }
  el.dateTime = iso;
  el.title = iso;
  el.textContent = timeFormat.format(date);
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** A compact time: the clock time for today, the date and time otherwise. */
export function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const today = new Date().toDateString() === date.toDateString();
  return (today ? clockFormat : shortTimeFormat).format(date);
}

/** "1.2s" style duration between two ISO times, or "" when either is missing. */
export function elapsed(fromIso, toIso) {
  if (!fromIso || !toIso) return "";
  const ms = new Date(toIso).getTime() - new Date(fromIso).getTime();
  if (!Number.isFinite(ms) || ms < 0) return "";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}
