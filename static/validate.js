// Client-side copies of the API's input rules, so a person sees what is wrong before anything is
// sent. The server stays the authority: whatever it still refuses is shown as
// it says it.

export const ACCOUNT_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;
export const MAX_TOTAL = 10000;
export const MAX_DELAY_MS = 24 * 60 * 60 * 1000;

const UNIT_MS = new Map([
  ["ms", 1], ["msec", 1], ["msecs", 1], ["millisecond", 1], ["milliseconds", 1],
  ["s", 1000], ["sec", 1000], ["secs", 1000], ["second", 1000], ["seconds", 1000],
  ["m", 60000], ["min", 60000], ["mins", 60000], ["minute", 60000], ["minutes", 60000],
  ["h", 3600000], ["hr", 3600000], ["hrs", 3600000], ["hour", 3600000], ["hours", 3600000],
  ["d", 86400000], ["day", 86400000], ["days", 86400000],
  ["w", 604800000], ["week", 604800000], ["weeks", 604800000],
]);
const MAX_DELAY_TEXT = 32; // the server does not parse longer strings

const DURATION_RE = /^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)$/i;

/** Parse "500ms" / "1s" / "5m" / "2h" / "1.5h" / "250" (bare = ms) to milliseconds, or null. */
export function parseDurationMs(text) {
  const m = DURATION_RE.exec(String(text).trim());
  if (!m) return null;
  const unit = m[2].toLowerCase();
  const factor = unit === "" ? 1 : UNIT_MS.get(unit);
  if (factor === undefined) return null;
  return Number(m[1]) * factor;
}

export function validateAccountId(value) {
  if (value === "") return "Required.";
  if (value.length > 64) return `At most 64 characters (this has ${value.length}).`;
  if (!ACCOUNT_ID_RE.test(value)) {
    const bad = [...new Set(value.replace(/[A-Za-z0-9_.-]/g, ""))]
      .map((ch) => (/\s/.test(ch) ? "a space" : `"${ch}"`))
      .join(", ");
    return `Only letters, digits, _ . and - are allowed (found ${bad}).`;
  }
  return null;
}

export function validateTotal(value) {
  const text = value.trim();
  if (text === "") return "Required.";
  if (!/^\d+$/.test(text)) return "Must be a whole number from 1 to 10000.";
  const n = Number(text);
  if (n < 1 || n > MAX_TOTAL) return `Must be from 1 to 10000, got ${text}.`;
  return null;
}

export function validateDelay(value) {
  const text = value.trim();
  if (text === "") return "Required, e.g. 1s.";
  if (value.length > MAX_DELAY_TEXT) return `At most ${MAX_DELAY_TEXT} characters, e.g. 500ms or 1s.`;
  const ms = parseDurationMs(text);
  if (ms === null) return "Use a duration such as 500ms, 1s, 5m or 2h.";
  if (ms > MAX_DELAY_MS) return `Must be at most 24h, got ${text}.`;
  return null;
}

export const MAX_REVIEW_FIRST = 100;

/** reviewFirst: 0-100 and at most total (`values.total`, the total field's text, when that is valid). */
export function validateReviewFirst(value, values = {}) {
  const text = value.trim();
  if (text === "") return "Required: 0 for no review.";
  if (!/^\d+$/.test(text) || Number(text) > MAX_REVIEW_FIRST) return `Must be a whole number from 0 to ${MAX_REVIEW_FIRST}.`;
  const total = String(values.total ?? "").trim();
  if (validateTotal(total) === null && Number(text) > Number(total)) {
    return `Must be at most the number of invoices (${total}), got ${text}.`;
  }
  return null;
}

// Each takes the field's text and the texts of the whole form (for rules across fields).
export const VALIDATORS = {
  accountId: validateAccountId,
  total: validateTotal,
  delay: validateDelay,
  reviewFirst: validateReviewFirst,
};

// ---- price list (PUT /api/prices)

export const MAX_DESCRIPTION_CHARS = 120;
export const MAX_UNIT_PRICE_CENTS = 100000000;
export const MAX_TAX_BASIS_POINTS = 10000;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const HUNDREDTHS_RE = /^(\d{1,9})(?:\.(\d{1,2}))?$/;

/** "49.00" / "49" / "0.5" to hundredths (cents, or basis points of a percent); null otherwise. */
export function parseHundredths(text) {
  const m = HUNDREDTHS_RE.exec(String(text).trim());
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "").padEnd(2, "0"));
}

/** Hundredths as "49.00". */
export function formatHundredths(value) {
  return `${Math.floor(value / 100)}.${String(value % 100).padStart(2, "0")}`;
}

export function validateDescription(value) {
  // The server counts characters (code points), not UTF-16 units.
  const length = Array.from(value).length;
  if (value.trim() === "") return "Required.";
  if (length > MAX_DESCRIPTION_CHARS) return `At most ${MAX_DESCRIPTION_CHARS} characters (this has ${length}).`;
  if (CONTROL_RE.test(value)) return "No line breaks or other control characters.";
  return null;
}

export function validateUnitPrice(value) {
  const text = value.trim();
  if (text === "") return "Required, e.g. 49.00.";
  const cents = parseHundredths(text);
  if (cents === null) return `Use an amount such as 49.00: digits, at most 2 decimals, no sign (got ${text}).`;
  if (cents > MAX_UNIT_PRICE_CENTS) return `Must be at most ${formatHundredths(MAX_UNIT_PRICE_CENTS)}, got ${text}.`;
  return null;
}

export function validateTaxRate(value) {
  const text = value.trim();
  if (text === "") return "Required, e.g. 8.25.";
  const basisPoints = parseHundredths(text);
  if (basisPoints === null || basisPoints > MAX_TAX_BASIS_POINTS) {
    return `Must be a percentage from 0 to 100 with at most 2 decimals, got ${text}.`;
  }
  return null;
}
