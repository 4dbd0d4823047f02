// The only module that talks HTTP. Adds the optional bearer token, turns
// non-2xx answers into ApiError carrying the server's {"error": "..."} text,
// and asks for a token once when the server answers 401.

const TOKEN_KEY = "invoices.token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

let askForToken = async () => null;
let pendingAsk = null;
// After a person dismisses the prompt, background requests (polling) do not
// ask again; the next thing they do themselves (refresh, start) may.
let declined = false;

/** Install the function that asks a person for a token; it resolves to the token or null. */
export function setTokenPrompt(fn) {
  askForToken = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage can be disabled; the token then lives only as long as this call chain.
  }
}

/** Allow the token prompt again after it was dismissed; call on a person's own action. */
export function allowTokenPrompt() {
  declined = false;
}

// Several requests may hit 401 at once; ask the person only once.
async function obtainToken(rejected) {
  if (declined) return null;
  if (!pendingAsk) {
    pendingAsk = (async () => {
      const token = await askForToken(rejected !== null);
      if (token) {
        setToken(token);
        window.dispatchEvent(new Event("invoices:token"));
      } else {
        declined = true;
      }
      return token;
    })().finally(() => { pendingAsk = null; });
  }
  return pendingAsk;
}

async function request(method, path, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const token = getToken();
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "The server cannot be reached. Is it running?", null);
    }
    if (response.status === 401) {
      const fresh = await obtainToken(token);
      if (!fresh) throw new ApiError(401, "An access token is required.", null);
      continue;
    }
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try {
        data = await response.json();
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message = (data && typeof data.error === "string" && data.error)
        || `The server answered ${response.status} ${response.statusText}.`;
      throw new ApiError(response.status, message, data);
    }
    return data;
  }
  throw new ApiError(401, "The access token was refused.", null);
}

const enc = encodeURIComponent;

export const api = {
  start: (accountId, total, delay, reviewFirst = 0) => request("POST", "/api/start", { accountId, total, delay, reviewFirst }),
  approve: (runId) => request("POST", `/api/runs/${enc(runId)}/approve`, {}),
  reject: (runId) => request("POST", `/api/runs/${enc(runId)}/reject`, {}),
  status: (runId) => request("GET", `/api/status?runId=${enc(runId)}`),
  run: (runId) => request("GET", `/api/runs/${enc(runId)}`),
  cancel: (runId) => request("POST", "/api/cancel", { runId }),
  runs: (limit = 20) => request("GET", `/api/runs?limit=${limit}`),
  invoices: (runId) => request("GET", `/api/runs/${enc(runId)}/invoices`),
  invoice: (invoiceId) => request("GET", `/api/invoices/${enc(invoiceId)}`),
  creditNote: (creditNoteId) => request("GET", `/api/credit-notes/${enc(creditNoteId)}`),
  corrections: (runId) => request("GET", `/api/runs/${enc(runId)}/corrections`),
  correct: (runId) => request("POST", `/api/runs/${enc(runId)}/correct`, {}),
  prices: (version = null) => request("GET", version === null ? "/api/prices" : `/api/prices?version=${enc(String(version))}`),
  putPrices: (body) => request("PUT", "/api/prices", body),
};

export function csvUrl(runId) {
  return `/api/runs/${enc(runId)}/invoices?format=csv`;
}

export function correctionsCsvUrl(runId) {
  return `/api/runs/${enc(runId)}/corrections?format=csv`;
}

/** Stream URL; EventSource cannot send headers, so the token travels in the query. */
export function streamUrl(runId, startIndex) {
  const params = new URLSearchParams();
  if (startIndex > 0) params.set("startIndex", String(startIndex));
  const token = getToken();
  if (token) params.set("token", token);
  const query = params.toString();
  return `/api/stream/${enc(runId)}${query ? `?${query}` : ""}`;
}

/** Fetch the run's invoices CSV with the token header and hand it to the browser as a download. */
export function downloadCsv(runId) {
  return downloadFile(csvUrl(runId), `invoices-${runId}.csv`);
}

/** Fetch `path` with the token header and hand it to the browser as the download `filename`. */
export async function downloadFile(path, filename) {
  const token = getToken();
  const response = await fetch(path, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    cache: "no-store",
  });
  if (response.status === 401) {
    const fresh = await obtainToken(token);
    if (!fresh) throw new ApiError(401, "An access token is required.", null);
    return downloadFile(path, filename);
  }
  if (!response.ok) throw new ApiError(response.status, `CSV download failed (${response.status}).`, null);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
