// Follows one run's event stream exactly once per event.
//
// The stream is replayed from index 0, so a reload or a reconnect never loses
// an event; every event carries `id: <index>` and anything at an index already
// seen is dropped, so nothing is delivered twice. The browser's own reconnect
// sends Last-Event-ID; when the browser gives up (HTTP error, 401) we reopen
// with ?startIndex= ourselves, with backoff.

import { streamUrl } from "./api.js";

export const TERMINAL_EVENTS = new Set(["complete", "cancelled", "error"]);
const NAMED_EVENTS = ["message", "progress", "complete", "cancelled"];
const MAX_BACKOFF_MS = 15000;

export class RunFollower {
  /**
   * @param {string} runId
   * @param {{onEvent(index: number, data: object): void,
   *          onState(state: "connecting"|"open"|"reconnecting"|"closed"): void,
   *          onDrop(): Promise<string|null>}} handlers
   *   onDrop is called when the connection breaks; it resolves to the run's
   *   current status (or null if unknown) so a finished run whose stream has
   *   no terminal event does not reconnect forever.
   */
  constructor(runId, handlers) {
    this.runId = runId;
    this.handlers = handlers;
    this.nextIndex = 0;
    this.source = null;
    this.state = "idle";
    this.retryTimer = null;
    this.backoff = 500;
    this.runFinished = false;
    this.finishedWithoutEvents = 0;
  }

  start() {
    this.open();
  }

  /** Reconnect at once if waiting to retry (e.g. a token was just given). */
  retryNow() {
    if (this.state !== "reconnecting" || this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.backoff = 500;
    this.open();
  }

  stop() {
    this.closeSource();
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setState("closed");
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.handlers.onState(state);
  }

  open() {
    this.closeSource();
    this.setState(this.nextIndex === 0 ? "connecting" : "reconnecting");
    const source = new EventSource(streamUrl(this.runId, this.nextIndex));
    this.source = source;
    const onMessage = (event) => this.receive(event);
    for (const name of NAMED_EVENTS) source.addEventListener(name, onMessage);
    source.addEventListener("open", () => {
      if (this.source !== source) return;
      this.backoff = 500;
      this.setState("open");
    });
    source.addEventListener("error", (event) => {
      if (this.source !== source) return;
      // A server-sent "event: error" arrives here too, as a MessageEvent with data.
      if (typeof event.data === "string") {
        this.receive(event);
        return;
      }
      this.dropped(source);
    });
  }

  closeSource() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  receive(event) {
    if (this.state === "closed") return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    const index = Number.parseInt(event.lastEventId, 10);
    if (Number.isFinite(index)) {
      if (index < this.nextIndex) return;
      this.nextIndex = index + 1;
    } else {
      this.nextIndex += 1;
    }
    this.finishedWithoutEvents = 0;
    this.handlers.onEvent(this.nextIndex - 1, data);
    if (data && TERMINAL_EVENTS.has(data.type)) this.stop();
  }

  async dropped(source) {
    const browserRetries = source.readyState === EventSource.CONNECTING;
    if (!browserRetries) this.closeSource();
    this.setState("reconnecting");
    let status = null;
    try {
      status = await this.handlers.onDrop();
    } catch {
      status = null;
    }
    if (this.state === "closed") return;
    if (status && ["completed", "failed", "cancelled"].includes(status)) {
      // The stream of a finished run ends right after its last event; if a
      // reconnect delivered nothing new, there is nothing more to wait for.
      this.finishedWithoutEvents += 1;
      if (this.finishedWithoutEvents >= 2) {
        this.stop();
        return;
      }
    }
    if (browserRetries && this.source === source) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }
}
