// What every page shares: the API client (with the pasted key), server-sent events,
// building DOM as text (never as HTML), formatting, the page header and the feedback form.

const KEY_STORAGE = "outcrop.apiKey";

export function apiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function setApiKey(value) {
  try {
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage may be off (private windows): the key then lasts until the page reloads.
  }
}

/** An answer from the API that was not a success, with the message the server gave. */
export class ApiError extends Error {
  constructor(message, status = 0, code = null, param = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

async function errorFrom(response) {
  let message = `The server answered ${response.status} ${response.statusText}.`;
  let code = null;
  let param = null;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      message = body.error.message;
      code = body.error.code ?? null;
      param = body.error.param ?? null;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  if (response.status === 401) {
    message += " Paste an API key in the field at the top of the page.";
  }
  return new ApiError(message, response.status, code, param);
}

/** fetch() with the key and JSON; resolves to a successful Response or throws ApiError. */
export async function request(path, { method = "GET", body, signal } = {}) {
  const headers = {};
  const form = body instanceof FormData; // files: the browser sets the multipart type
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined || form ? body : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(
      `Could not reach the server (${err.message}). Is outcrop serve still running?`,
    );
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** The JSON answer of an API call. */
export async function api(path, options) {
  const response = await request(path, options);
  return response.json();
}

/** The JSON payloads of a server-sent event stream, up to `data: [DONE]`. */
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const parts = buffer.split(/\r?\n\r?\n/);
      buffer = parts.pop();
      for (const part of parts) {
        const data = part
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// -- DOM --------------------------------------------------------------------------------

function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setProps(node, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name === "text") node.textContent = String(value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
}

/** An element; strings among the children become text nodes, never markup. */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  setProps(node, props);
  return appendAll(node, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element, built the same way as el(). */
export function svg(tag, props, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setProps(node, props);
  return appendAll(node, children);
}

/** The address of a trace's page. */
export function traceHref(id) {
  return `/ui/trace/${encodeURIComponent(id)}`;
}

/** Replace what `where` shows with a message (role=alert, so it is read out). */
export function showError(where, message) {
  where.replaceChildren(el("div", { class: "error", role: "alert" }, message));
}

// -- formatting -------------------------------------------------------------------------

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtInt(n) {
  if (n === null || n === undefined) return "—";
  return Number(n).toLocaleString("en-US");
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "—";
  if (usd === 0) return "$0";
  if (Math.abs(usd) >= 1) return `$${usd.toFixed(2)}`;
  return `$${Number(usd.toPrecision(3))}`;
}

/** A prompt as name@version (or name), or "" for none. */
export function fmtPrompt(name, version) {
  if (!name) return "";
  return version ? `${name}@${version}` : name;
}

export function fmtTime(epochSeconds) {
  if (!epochSeconds) return "—";
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

// -- the page header --------------------------------------------------------------------

const PAGES = [
  ["playground", "Playground", "/ui/playground"],
  ["monitor", "Monitor", "/ui/monitor"],
  ["evals", "Evals", "/ui/evals"],
  ["knowledge", "Knowledge", "/ui/knowledge"],
  ["models", "Models", "/ui/models"],
];

/** The header: the pages, and the API key field. `onKey` runs after the key changes. */
export function header(active, onKey) {
  const input = el("input", {
    id: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "not needed without keys",
    "aria-label": "API key",
  });
  input.value = apiKey();
  const status = el("span", { class: "key-status", role: "status" });
  const form = el(
    "form",
    { class: "key", id: "key-form" },
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { type: "submit" }, "Save"),
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    setApiKey(value);
    status.textContent = value ? "Key saved in this browser." : "Key cleared.";
    if (onKey) onKey();
  });
  const nav = el(
    "nav",
    { "aria-label": "Pages" },
    PAGES.map(([name, label, href]) =>
      el("a", { href, "aria-current": name === active ? "page" : null }, label),
    ),
  );
  const top = el(
    "header",
    { class: "top" },
    el("a", { class: "brand", href: "/ui/playground" }, "outcrop"),
    nav,
    form,
  );
  document.body.prepend(top);
  return top;
}

// -- feedback ---------------------------------------------------------------------------

/** A thumb icon drawn inline (emoji fonts are not everywhere); pointing down if `down`. */
function thumb(down) {
  return svg(
    "svg",
    { viewBox: "0 0 24 24", width: "16", height: "16", "aria-hidden": "true", class: "icon" },
    svg("path", {
      d:
        "M2 21h4V9H2v12zm20-11c0-1.1-.9-2-2-2h-6.3l.95-4.57.03-.32c0-.41-.17-.79-.44" +
        "-1.06L13.17 1 6.59 7.59C6.22 7.95 6 8.45 6 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 " +
        "1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
      transform: down ? "rotate(180 12 12)" : null,
    }),
  );
}

/** Thumbs up/down and a comment on a trace; sent to POST /v1/traces/{id}/feedback. */
export function feedbackForm(traceId, existing) {
  let rating = existing ? existing.rating : null;
  const status = el("span", { class: "status", role: "status" });
  const up = el(
    "button",
    { type: "button", class: "thumb up", title: "Good answer", "aria-label": "Thumbs up" },
    thumb(false),
  );
  const down = el(
    "button",
    { type: "button", class: "thumb down", title: "Bad answer", "aria-label": "Thumbs down" },
    thumb(true),
  );
  const comment = el("input", {
    type: "text",
    class: "comment",
    maxlength: "4000",
    placeholder: "Comment (optional)",
    "aria-label": "Comment",
  });
  comment.value = existing ? existing.comment || "" : "";
  const send = el("button", { type: "submit", class: "send" }, "Send");
  const form = el("form", { class: "feedback" }, up, down, comment, send, status);

  function pressed() {
    up.setAttribute("aria-pressed", String(rating === "up"));
    down.setAttribute("aria-pressed", String(rating === "down"));
  }

  async function submit() {
    if (!rating) {
      status.className = "status error";
      status.textContent = "Choose thumbs up or down first.";
      return;
    }
    status.className = "status";
    status.textContent = "Saving…";
    try {
      await api(`/v1/traces/${encodeURIComponent(traceId)}/feedback`, {
        method: "POST",
        body: { rating, comment: comment.value },
      });
      status.className = "status ok";
      status.textContent = "Feedback saved.";
    } catch (err) {
      status.className = "status error";
      status.textContent = `Feedback not saved: ${err.message}`;
    }
  }

  for (const [button, value] of [
    [up, "up"],
    [down, "down"],
  ]) {
    button.addEventListener("click", () => {
      rating = value;
      pressed();
      submit();
    });
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  pressed();
  return form;
}
