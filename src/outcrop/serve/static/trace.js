// One trace: what was asked, what came back, the tool calls, retrieved passages, guardrail
// decisions, timings, attempts, children, and the feedback form. Data from GET /v1/traces/{id}.

import {
  api,
  el,
  feedbackForm,
  fmtCost,
  fmtInt,
  fmtMs,
  fmtPrompt,
  fmtTime,
  header,
  showError,
  svg,
  traceHref,
} from "./common.js";

const main = document.getElementById("trace");
const traceId = decodeURIComponent(location.pathname.replace(/^\/ui\/trace\//, ""));

function textOf(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (typeof part === "string" ? part : part.text ?? `[${part.type || "part"}]`))
      .join("");
  }
  return JSON.stringify(content);
}

function json(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function section(title, cls, ...content) {
  return el(
    "section",
    { class: `panel ${cls}`, "aria-label": title },
    el("h2", null, title),
    content,
  );
}

function table(head, rows) {
  return el(
    "table",
    null,
    el("thead", null, el("tr", null, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", null, rows.map((cells) => el("tr", null, cells.map((c) => el("td", null, c))))),
  );
}

function pairs(items) {
  return el(
    "dl",
    { class: "pairs" },
    items
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([label, value]) => [el("dt", null, label), el("dd", null, value)]),
  );
}

/** The response as recorded: plain text, or an assistant message (JSON) with tool calls. */
function parseResponse(response) {
  if (typeof response !== "string") return { text: textOf(response), calls: [] };
  if (response.startsWith("{")) {
    try {
      const message = JSON.parse(response);
      if (message && (message.role || message.tool_calls)) {
        return { text: textOf(message.content), calls: message.tool_calls || [] };
      }
    } catch {
      // Text that happens to start with a brace.
    }
  }
  return { text: response, calls: [] };
}

const ENTITIES = { "&quot;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">", "&#39;": "'" };

/** Passages a knowledge base put into the prompt as <source n=… source=…> blocks. */
function retrievedChunks(messages) {
  const found = [];
  const block = /<source\s+([^>]*)>\n?([\s\S]*?)\n?<\/source>/g;
  for (const message of messages) {
    if (message.role !== "user") continue;
    for (const match of textOf(message.content).matchAll(block)) {
      const attrs = {};
      for (const [, name, value] of match[1].matchAll(/(\w+)="([^"]*)"/g)) {
        attrs[name] = value.replace(/&(quot|amp|lt|gt|#39);/g, (e) => ENTITIES[e]);
      }
      found.push({ n: attrs.n, source: attrs.source, section: attrs.section, text: match[2] });
    }
  }
  return found;
}

function timingBar(latency, ttft) {
  if (!latency) return null;
  const width = 400;
  const first = ttft ? Math.min(width, (ttft / latency) * width) : 0;
  return svg(
    "svg",
    { class: "timing", viewBox: `0 0 ${width} 18`, role: "img", "aria-label": "Timing" },
    svg(
      "rect",
      { class: "waiting", x: 0, y: 2, width: first, height: 14 },
      svg("title", null, `waiting for the first token: ${fmtMs(ttft)}`),
    ),
    svg(
      "rect",
      { class: "generating", x: first, y: 2, width: width - first, height: 14 },
      svg("title", null, `generating: ${fmtMs(latency - (ttft || 0))}`),
    ),
  );
}

function messageView(message) {
  const calls = (message.tool_calls || []).map((call) =>
    el(
      "div",
      { class: "tool-call" },
      el("code", null, call.name || call.function?.name || "tool"),
      " ",
      json(call.arguments ?? call.function?.arguments ?? {}),
    ),
  );
  return el(
    "article",
    { class: `msg ${message.role}` },
    el(
      "header",
      null,
      el("span", { class: "who" }, message.role),
      message.tool_call_id
        ? el("span", { class: "hint" }, ` result of ${message.tool_call_id}`)
        : null,
    ),
    el("div", { class: "content" }, textOf(message.content)),
    calls,
  );
}

function toolCallsView(messages, responseCalls, children) {
  const results = new Map();
  for (const m of messages) {
    if (m.role === "tool" && m.tool_call_id) results.set(m.tool_call_id, textOf(m.content));
  }
  const rows = [];
  for (const m of messages) {
    for (const call of m.tool_calls || []) {
      const result = results.get(call.id) ?? "";
      rows.push([el("code", null, call.name), json(call.arguments), result, ""]);
    }
  }
  for (const call of responseCalls) {
    const result = "(asked for in the response)";
    rows.push([el("code", null, call.name), json(call.arguments), result, ""]);
  }
  for (const child of children.filter((c) => c.kind === "tool")) {
    rows.push([
      el("code", null, child.request?.tool ?? child.requested_model),
      json(child.request?.arguments ?? {}),
      child.response ?? child.error ?? "",
      el("a", { href: traceHref(child.id) }, `${child.status} · ${fmtMs(child.latency_ms)}`),
    ]);
  }
  if (!rows.length) return null;
  return section("Tool calls", "tools", table(["Tool", "Arguments", "Result", "Trace"], rows));
}

function show(data) {
  const t = data.trace;
  const request = t.request || {};
  const messages = Array.isArray(request.messages) ? request.messages : [];
  const response = parseResponse(t.response);
  const children = data.children || [];
  document.title = `Trace ${t.id} · outcrop`;

  const model =
    t.model && t.model !== t.requested_model
      ? `${t.requested_model} → ${t.model}`
      : t.model || t.requested_model;
  const generation = t.latency_ms && t.ttft_ms ? t.latency_ms - t.ttft_ms : null;
  const rate =
    generation && t.output_tokens
      ? `${(t.output_tokens / (generation / 1000)).toFixed(1)} tokens/s`
      : null;
  const parts = [
    el(
      "div",
      { class: "trace-head" },
      el("h1", null, "Trace ", el("code", null, t.id)),
      el("span", { class: `badge status-${t.status}` }, t.status),
    ),
    section(
      "Summary",
      "summary",
      pairs([
        ["Kind", t.kind],
        ["Model", model],
        ["Provider", t.provider],
        ["Started", fmtTime(t.started_at)],
        ["Streamed", t.stream ? "yes" : "no"],
        ["Finish", t.finish_reason],
        ["Prompt", fmtPrompt(t.prompt_name, t.prompt_version)],
        ["API key", t.api_key],
        ["Parent", t.parent_id ? el("a", { href: traceHref(t.parent_id) }, t.parent_id) : null],
      ]),
    ),
    section(
      "Timings and usage",
      "timings",
      pairs([
        ["Latency", fmtMs(t.latency_ms)],
        ["Time to first token", t.ttft_ms === null ? null : fmtMs(t.ttft_ms)],
        [
          "Generation",
          generation === null ? null : `${fmtMs(generation)}${rate ? " · " + rate : ""}`,
        ],
        ["Input tokens", `${fmtInt(t.input_tokens)}${t.usage_estimated ? " (estimated)" : ""}`],
        ["Output tokens", `${fmtInt(t.output_tokens)}${t.usage_estimated ? " (estimated)" : ""}`],
        ["Cost", fmtCost(t.cost_usd)],
      ]),
      timingBar(t.latency_ms, t.ttft_ms),
      t.latency_ms && t.ttft_ms
        ? el(
            "div",
            { class: "legend" },
            el("span", null, el("i", { class: "swatch waiting" }), "waiting for the first token"),
            el("span", null, el("i", { class: "swatch generating" }), "generating"),
          )
        : null,
    ),
  ];
  if (t.error) {
    parts.push(section("Error", "failure", el("div", { class: "error", role: "alert" }, t.error)));
  }
  if (messages.length) {
    parts.push(section("Messages", "messages", messages.map(messageView)));
  }
  const options = Object.fromEntries(
    Object.entries(request).filter(([name]) => !["messages", "model"].includes(name)),
  );
  if (Object.keys(options).length) {
    parts.push(
      section(
        messages.length ? "Request options" : "Request",
        "options",
        el("pre", null, json(options)),
      ),
    );
  }
  if (t.response !== null && t.response !== undefined) {
    parts.push(
      section(
        "Response",
        "response",
        el("div", { class: "content" }, response.text || (response.calls.length ? "" : "(empty)")),
      ),
    );
  }
  const tools = toolCallsView(messages, response.calls, children);
  if (tools) parts.push(tools);
  const chunks = t.retrieved || t.sources || retrievedChunks(messages);
  if (chunks.length) {
    parts.push(
      section(
        "Retrieved chunks",
        "chunks",
        chunks.map((c, i) =>
          el(
            "article",
            { class: "chunk" },
            el(
              "header",
              null,
              el("span", { class: "who" }, `[${c.n ?? c.number ?? i + 1}]`),
              " ",
              c.source ?? "",
              c.section ? el("span", { class: "hint" }, ` · ${c.section}`) : null,
              c.score !== undefined
                ? el("span", { class: "hint" }, ` · score ${Number(c.score).toFixed(3)}`)
                : null,
            ),
            el("div", { class: "content" }, c.text ?? ""),
          ),
        ),
      ),
    );
  }
  const decisions = t.guardrails || [];
  parts.push(
    section(
      "Guardrails",
      "guardrails",
      decisions.length
        ? table(
            ["Point", "Check", "Action", "Matched", "Score", "Source"],
            decisions.map((d) => [
              d.point,
              d.check,
              el("span", { class: `badge action-${d.action}` }, d.action),
              d.matched ?? "",
              d.score === null || d.score === undefined ? "" : Number(d.score).toFixed(3),
              d.source ?? "",
            ]),
          )
        : el("p", { class: "hint" }, "No guardrail acted on this call."),
    ),
  );
  const attempts = t.attempts || [];
  if (attempts.length) {
    parts.push(
      section(
        "Attempts",
        "attempts",
        table(
          ["#", "Model", "Status code", "Error"],
          attempts.map((a, i) => [String(i + 1), a.model, a.status_code ?? "", a.error ?? "ok"]),
        ),
      ),
    );
  }
  if (children.length) {
    parts.push(
      section(
        "Children",
        "children",
        table(
          ["Trace", "Kind", "Model", "Status", "Tokens in/out", "Latency"],
          children.map((c) => [
            el("a", { href: traceHref(c.id) }, c.id),
            c.kind,
            c.model || c.requested_model,
            el("span", { class: `badge status-${c.status}` }, c.status),
            `${fmtInt(c.input_tokens)} / ${fmtInt(c.output_tokens)}`,
            fmtMs(c.latency_ms),
          ]),
        ),
      ),
    );
  }
  parts.push(section("Feedback", "feedback-box", feedbackForm(t.id, data.feedback)));
  main.replaceChildren(...parts);
}

async function load() {
  if (!traceId) {
    showError(main, "No trace id in the address: open a trace from the monitor.");
    return;
  }
  try {
    show(await api(`/v1/traces/${encodeURIComponent(traceId)}`));
  } catch (err) {
    showError(main, err.message);
    main.append(el("p", null, el("a", { href: "/ui/monitor" }, "← The latest traces")));
  }
}

header(null, load);
load();
