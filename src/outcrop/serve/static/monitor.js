// The monitor: totals and charts from GET /v1/metrics/summary, online evaluation's scores
// and alerts from GET /v1/monitor/online and GET /v1/alerts, the latest traces from
// GET /v1/traces. Filters live in the address, so a view can be shared or reloaded.

import { chart } from "./charts.js";
import {
  api,
  el,
  fmtCost,
  fmtInt,
  fmtMs,
  fmtPrompt,
  fmtTime,
  header,
  showError,
  traceHref,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const FILTERS = ["hours", "bucket", "model", "prompt", "key"];
const BUCKETS = [60, 300, 900, 3600, 21600, 86400, 604800];
let timer = null;
let seq = 0;

/** A bucket that gives at most about 60 points over the range. */
function autoBucket(hours) {
  const seconds = hours * 3600;
  return BUCKETS.find((b) => seconds / b <= 60) ?? BUCKETS[BUCKETS.length - 1];
}

function readAddress() {
  const query = new URLSearchParams(location.search);
  for (const name of [...FILTERS, "kind", "status"]) {
    const value = query.get(name);
    if (value === null) continue;
    const input = $(name);
    if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === value)) {
      input.append(el("option", { value }, value));
    }
    input.value = value;
  }
}

function writeAddress() {
  const query = new URLSearchParams();
  for (const name of [...FILTERS, "kind", "status"]) {
    const value = $(name).value.trim();
    if (value) query.set(name, value);
  }
  const text = query.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
}

async function loadModels() {
  const select = $("model");
  const chosen = select.value;
  try {
    const body = await api("/v1/models");
    const ids = body.data.map((m) => m.id);
    if (chosen && !ids.includes(chosen)) ids.push(chosen);
    select.replaceChildren(
      el("option", { value: "" }, "all models"),
      ...ids.map((id) => el("option", { value: id }, id)),
    );
    select.value = chosen;
  } catch {
    // The summary below says what is wrong (a missing key, most often).
  }
}

function card(label, value, detail, cls) {
  return el(
    "div",
    { class: `card ${cls || ""}`, dataset: { metric: label.toLowerCase() } },
    el("div", { class: "label" }, label),
    el("div", { class: "value" }, value),
    detail ? el("div", { class: "detail" }, detail) : null,
  );
}

function showSummary(data) {
  const t = data.totals;
  const rate = t.requests ? `${((100 * t.errors) / t.requests).toFixed(1)}% of requests` : null;
  $("totals").replaceChildren(
    card("Requests", fmtInt(t.requests)),
    card("Errors", fmtInt(t.errors), rate, t.errors ? "bad" : ""),
    card("Latency p50", fmtMs(t.latency_p50_ms)),
    card("Latency p95", fmtMs(t.latency_p95_ms)),
    card("Input tokens", fmtInt(t.input_tokens)),
    card("Output tokens", fmtInt(t.output_tokens)),
    card("Cost", fmtCost(t.cost_usd)),
  );
  const b = data.buckets;
  const starts = b.map((x) => x.start);
  const bucket = b.length > 1 ? b[1].start - b[0].start : Number($("bucket").value) || 3600;
  const col = (name) => b.map((x) => x[name]);
  $("charts").replaceChildren(
    chart({
      title: "Requests and errors",
      starts,
      bucket,
      kind: "bars",
      series: [
        { name: "requests", values: col("requests"), cls: "s1" },
        { name: "errors", values: col("errors"), cls: "bad" },
      ],
      format: fmtInt,
      integer: true,
    }),
    chart({
      title: "Latency",
      starts,
      bucket,
      series: [
        { name: "p50", values: col("latency_p50_ms"), cls: "s1" },
        { name: "p95", values: col("latency_p95_ms"), cls: "s2" },
      ],
      format: fmtMs,
    }),
    chart({
      title: "Tokens",
      starts,
      bucket,
      series: [
        { name: "input", values: col("input_tokens"), cls: "s1" },
        { name: "output", values: col("output_tokens"), cls: "s2" },
      ],
      format: fmtInt,
      integer: true,
    }),
    chart({
      title: "Cost",
      starts,
      bucket,
      kind: "bars",
      series: [{ name: "cost (USD)", values: col("cost_usd"), cls: "s3" }],
      format: fmtCost,
    }),
  );
}

// -- online evaluation -------------------------------------------------------------------

const MEASURES = { latency_ms: fmtMs, tokens: fmtInt, cost: fmtCost };

function fmtScore(value) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(2);
}

/** How a metric's values read: scores 0..1 with two decimals; measurements in their unit. */
function formatFor(series) {
  return MEASURES[series.kind ?? series.metric] || fmtScore;
}

function showOnlineStatus(status) {
  const box = $("online-status");
  if (!status.enabled) {
    box.replaceChildren(
      "Off on this server: add [monitor.online_eval] to outcrop.toml to score a share of " +
        "live calls.",
    );
    return;
  }
  const share = `${Number((status.sample_rate * 100).toPrecision(3))}%`;
  const parts = [
    `scores ${share} of chat calls with ${status.metrics.join(", ")}`,
    `${fmtInt(status.scored)} scored since the server started`,
    `${fmtInt(status.queued)} waiting`,
  ];
  if (status.dropped) parts.push(`${fmtInt(status.dropped)} dropped (queue full)`);
  if (status.webhook_failures) parts.push(`${fmtInt(status.webhook_failures)} webhook failures`);
  box.replaceChildren(parts.join(" · "));
}

function showOnline(data) {
  showOnlineStatus(data.status);
  const withScores = data.metrics;
  if (!withScores.length) {
    $("online-totals").replaceChildren(
      el("p", { class: "hint" }, "No scores in this range yet."),
    );
    $("online-charts").replaceChildren();
    return;
  }
  const starts = withScores[0].buckets.map((b) => b.start);
  $("online-totals").replaceChildren(
    ...withScores.map((m) =>
      card(m.metric, formatFor(m)(m.mean), `${fmtInt(m.count)} scores`, "score"),
    ),
  );
  $("online-charts").replaceChildren(
    ...withScores.map((m) =>
      chart({
        title: `${m.metric}${m.higher_is_better === false ? " (lower is better)" : ""}`,
        starts,
        bucket: data.bucket,
        series: [{ name: "mean", values: m.buckets.map((b) => b.mean), cls: "s1" }],
        format: formatFor(m),
      }),
    ),
  );
}

function showAlerts(rows) {
  const box = $("alerts");
  if (!rows.length) {
    box.replaceChildren(el("p", { class: "hint" }, "No alerts."));
    return;
  }
  // Open alerts first, then the latest resolved ones.
  const ordered = [...rows.filter((a) => a.open), ...rows.filter((a) => !a.open)];
  const head = ["State", "Rule", "What happened", "Opened", "Resolved"];
  box.replaceChildren(
    el(
      "table",
      { class: "alerts" },
      el("thead", null, el("tr", null, head.map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        null,
        ordered.map((a) =>
          el(
            "tr",
            { dataset: { alertId: a.id, state: a.open ? "open" : "resolved" } },
            el(
              "td",
              null,
              el(
                "span",
                { class: `badge ${a.open ? "status-error" : "status-ok"}` },
                a.open ? "open" : "resolved",
              ),
            ),
            el("td", null, a.rule),
            el(
              "td",
              null,
              a.detail,
              a.closed_value !== null ? ` — back to ${Number(a.closed_value.toPrecision(4))}` : "",
            ),
            el("td", null, fmtTime(a.opened_at)),
            el("td", null, a.closed_at ? fmtTime(a.closed_at) : "—"),
          ),
        ),
      ),
    ),
  );
}

async function refreshOnline(hours, bucket) {
  const until = Date.now() / 1000;
  const span = Number(hours) * 3600;
  const alerts = api("/v1/alerts?limit=20");
  let scores = null;
  if (span > 0 && span <= 8760 * 3600) {
    const query = new URLSearchParams({ since: String(until - span), until: String(until) });
    // The dashboard's bucket, unless it makes more points than the scores API gives.
    if (span / Number(bucket) <= 1000) query.set("bucket", bucket);
    for (const name of ["model", "prompt"]) {
      const value = $(name).value.trim();
      if (value) query.set(name, value);
    }
    scores = api(`/v1/monitor/online?${query}`);
  }
  const [s, a] = await Promise.allSettled([scores, alerts]);
  return { scores: scores === null ? null : s, alerts: a };
}

function showOnlineResults({ scores, alerts }) {
  if (scores === null) {
    $("online-error").replaceChildren();
    $("online-totals").replaceChildren(
      el("p", { class: "hint" }, "Choose a valid range above to see scores."),
    );
    $("online-charts").replaceChildren();
  } else if (scores.status === "fulfilled") {
    $("online-error").replaceChildren();
    showOnline(scores.value);
  } else {
    showError($("online-error"), `Online evaluation could not be shown: ${scores.reason.message}`);
    $("online-totals").replaceChildren();
    $("online-charts").replaceChildren();
  }
  if (alerts.status === "fulfilled") showAlerts(alerts.value.data);
  else showError($("alerts"), `The alerts could not be listed: ${alerts.reason.message}`);
}

function feedbackCell(feedback) {
  if (!feedback) return "";
  const mark = feedback.rating === "up" ? "👍" : "👎";
  return el("span", { title: feedback.comment || "" }, mark, feedback.comment ? " …" : "");
}

function showTraces(rows) {
  const box = $("traces");
  if (!rows.length) {
    box.replaceChildren(
      el(
        "p",
        { class: "hint" },
        "No traces match. Send a chat in the ",
        el("a", { href: "/ui/playground" }, "playground"),
        ".",
      ),
    );
    return;
  }
  const head = [
    "Started",
    "Kind",
    "Model",
    "Status",
    "Tokens in/out",
    "Latency",
    "TTFT",
    "Cost",
    "Prompt",
    "Key",
    "Feedback",
  ];
  box.replaceChildren(
    el(
      "table",
      { class: "traces" },
      el("thead", null, el("tr", null, head.map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        null,
        rows.map((r) =>
          el(
            "tr",
            { dataset: { traceId: r.id } },
            el("td", null, el("a", { href: traceHref(r.id) }, fmtTime(r.started_at))),
            el("td", null, r.kind),
            el("td", null, r.model),
            el("td", null, el("span", { class: `badge status-${r.status}` }, r.status)),
            el("td", { class: "num" }, `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}`),
            el("td", { class: "num" }, fmtMs(r.latency_ms)),
            el("td", { class: "num" }, fmtMs(r.ttft_ms)),
            el("td", { class: "num" }, fmtCost(r.cost_usd)),
            el("td", null, fmtPrompt(r.prompt_name, r.prompt_version)),
            el("td", null, r.api_key || ""),
            el("td", null, feedbackCell(r.feedback)),
          ),
        ),
      ),
    ),
  );
}

async function refresh() {
  const mine = ++seq;
  const hours = $("hours").value.trim();
  const bucket = $("bucket").value || String(autoBucket(Number(hours) || 24));
  const summary = new URLSearchParams({ hours: hours || "24", bucket });
  for (const name of ["model", "prompt", "key"]) {
    const value = $(name).value.trim();
    if (value) summary.set(name, value);
  }
  const list = new URLSearchParams({ limit: "50" });
  for (const name of ["model", "kind", "status"]) {
    const value = $(name).value.trim();
    if (value) list.set(name, value);
  }
  const [s, t, o] = await Promise.allSettled([
    api(`/v1/metrics/summary?${summary}`),
    api(`/v1/traces?${list}`),
    refreshOnline(hours || "24", bucket),
  ]);
  if (mine !== seq) return;
  if (o.status === "fulfilled") showOnlineResults(o.value);
  if (s.status === "fulfilled") {
    $("summary-error").replaceChildren();
    showSummary(s.value);
  } else {
    showError($("summary-error"), `The summary could not be shown: ${s.reason.message}`);
    $("totals").replaceChildren();
    $("charts").replaceChildren();
  }
  if (t.status === "fulfilled") showTraces(t.value.data);
  else showError($("traces"), `The traces could not be listed: ${t.reason.message}`);
}

function autoRefresh() {
  clearInterval(timer);
  timer = $("auto").checked ? setInterval(refresh, 10000) : null;
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  writeAddress();
  refresh();
});
for (const id of ["kind", "status", "model", "bucket"]) {
  $(id).addEventListener("change", () => {
    writeAddress();
    refresh();
  });
}
$("auto").addEventListener("change", autoRefresh);

header("monitor", () => {
  loadModels();
  refresh();
});
readAddress();
loadModels();
refresh();
