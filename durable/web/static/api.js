// The inspector's only module that talks HTTP. Paths are relative to the page,
// so the inspector works wherever the app mounts it. Adds the bearer token when
// the server asked for one (kept for this tab only), and turns non-2xx answers
// into ApiError carrying the server's {"error": "..."} sentence.

const TOKEN_KEY = "durable.inspector.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
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
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // storage disabled: the token is asked for again next time
  }
}

let asking = null;

/** Ask for the token with the page's <dialog id="token-dialog">; resolves to it or null. */
function askForToken() {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  asking = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const value = dialog.returnValue === "ok" ? input.value.trim() : "";
      if (value) setToken(value);
      asking = null;
      resolve(value || null);
    }, { once: true });
    input.value = "";
    dialog.showModal();
  });
  return asking;
}

async function request(method, path, body) {
  for (let tries = 0; tries < 3; tries++) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["Content-Type"] = "application/json";
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: method === "GET" ? undefined : JSON.stringify(body ?? {}),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch {
      throw new ApiError(0, "The server cannot be reached. Is it running?");
    }
    if (response.status === 401) {
      if (!(await askForToken())) throw new ApiError(401, "An access token is required.");
      continue;
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.error) || `The server answered ${response.status}.`);
    }
    return data;
  }
  throw new ApiError(401, "The access token was refused.");
}

const enc = encodeURIComponent;

export const api = {
  runs: (params) => request("GET", `runs.json?${params}`),
  workflows: () => request("GET", "workflows.json"),
  run: (id) => request("GET", `runs/${enc(id)}.json`),
  cancel: (id) => request("POST", `runs/${enc(id)}/cancel`, {}),
  resume: (id) => request("POST", `runs/${enc(id)}/resume`, {}),
  fork: (id, fromSeq) => request("POST", `runs/${enc(id)}/fork`, { from_seq: fromSeq }),
  resumeHook: (token, payload) => request("POST", `hooks/${enc(token)}`, payload),
};

/** The stream's URL; EventSource cannot send headers, so the token travels in the query. */
export function streamUrl(id, namespace, from) {
  const params = new URLSearchParams({ namespace, from: String(from) });
  const token = getToken();
  if (token) params.set("token", token);
  return `runs/${enc(id)}/stream?${params}`;
}
