// The Evals page: the runs (GET /v1/evals/runs), a run's matrix (GET /v1/evals/runs/{id}),
// a cell's cases (GET /v1/evals/runs/{id}/results?cell=), two runs compared
// (GET /v1/evals/compare) and the HTML report. What is shown lives in the address
// (?run=ID&cell=CELL, ?base=A&head=B), so a view can be shared or reloaded.

import {
  apiKey,
  api,
  el,
  fmtCost,
  fmtInt,
  fmtMs,
  fmtTime,
  header,
  request,
  showError,
  traceHref,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const RUNS_SHOWN = 50;
let runs = [];
const seq = { runs: 0, run: 0, cases: 0, comparison: 0 };

// -- the address ----------------------------------------------------------------------

function params() {
  return new URLSearchParams(location.search);
}

/** Change what the address says (keeping the rest) and show it. */
function go(changes) {
  const query = params();
  for (const [name, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") query.delete(name);
    else query.set(name, value);
  }
  const text = query.toString();
  history.pushState(null, "", text ? `?${text}` : location.pathname);
  route();
}

window.addEventListener("popstate", () => route());

// -- formatting -----------------------------------------------------------------------

/** A metric's value as its kind reads: milliseconds, dollars, counts or a score. */
function fmtMetric(name, value) {
  if (value === null || value === undefined) return "—";
  if (/latency|_ms$/.test(name)) return fmtMs(value);
  if (/cost/.test(name)) return fmtCost(value);
  if (/tokens/.test(name)) return fmtInt(Math.round(value));
  return value.toFixed(3);
}

function fmtSigned(name, value) {
  if (value === null || value === undefined) return "—";
  const text = fmtMetric(name, Math.abs(value));
  return value > 0 ? `+${text}` : value < 0 ? `−${text}` : text;
}

/** 0 (worst) to 4 (best) for a cell's mean among the run's cells, or null (no shade). */
function heat(higher, value, values) {
  if (value === null || value === undefined) return null;
  if (higher && values.every((v) => v >= 0 && v <= 1)) {
    return Math.min(4, Math.floor(value * 5));
  }
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  if (hi === lo) return null;
  let t = (value - lo) / (hi - lo);
  if (!higher) t = 1 - t;
  return Math.min(4, Math.floor(t * 5));
}

function badge(text, cls) {
  return el("span", { class: `badge ${cls}` }, text);
}

function table(head, rows, cls) {
  return el(
    "table",
    { class: cls },
    el(
      "thead",
      null,
      el(
        "tr",
        null,
        head.map((h) => el("th", { scope: "col" }, h)),
      ),
    ),
    el("tbody", null, rows),
  );
}

function loading(where, text) {
  where.replaceChildren(el("p", { class: "hint", role: "status" }, text));
}

// -- the runs -------------------------------------------------------------------------

async function loadRuns() {
  const mine = ++seq.runs;
  const suite = $("suite").value;
  const query = new URLSearchParams({ limit: String(RUNS_SHOWN) });
  if (suite) query.set("suite", suite);
  try {
    const body = await api(`/v1/evals/runs?${query}`);
    if (mine !== seq.runs) return;
    runs = body.data;
    $("runs-error").replaceChildren();
    if (!suite) fillSuites(runs);
    showRuns();
  } catch (err) {
    if (mine !== seq.runs) return;
    runs = [];
    $("runs").replaceChildren();
    showError($("runs-error"), `Could not list the eval runs: ${err.message}`);
  }
}

function fillSuites(list) {
  const select = $("suite");
  const chosen = select.value;
  const names = [...new Set(list.map((r) => r.suite))].sort();
  select.replaceChildren(
    el("option", { value: "" }, "all suites"),
    ...names.map((n) => el("option", { value: n }, n)),
  );
  select.value = chosen;
}

function headline(run) {
  return run.headline
    .filter((h) => h.mean !== null)
    .map((h) => `${h.metric} ${fmtMetric(h.metric, h.mean)}`)
    .join(" · ");
}

function showRuns() {
  if (!runs.length) {
    $("runs").replaceChildren(
      el("p", { class: "hint" }, "No eval runs yet. Run a suite with: outcrop eval run SUITE.yaml"),
    );
    return;
  }
  const query = params();
  const rows = runs.map((run) => {
    const pick = (name, label) => {
      const input = el("input", {
        type: "radio",
        name,
        value: run.id,
        "aria-label": `${label}: run ${run.id.slice(0, 8)}`,
      });
      input.checked = query.get(name) === run.id;
      return input;
    };
    const open = el(
      "a",
      { href: `?run=${encodeURIComponent(run.id)}`, class: "run-link" },
      el("code", null, run.id.slice(0, 8)),
    );
    open.addEventListener("click", (event) => {
      event.preventDefault();
      go({ run: run.id, cell: null });
    });
    return el(
      "tr",
      { dataset: { run: run.id }, "aria-current": query.get("run") === run.id ? "true" : null },
      el("td", { class: "pick" }, pick("base", "Base (A)")),
      el("td", { class: "pick" }, pick("head", "Head (B)")),
      el("td", null, open),
      el("td", null, run.suite),
      el("td", null, badge(run.status, `status-${run.status === "done" ? "ok" : run.status}`)),
      el("td", null, fmtTime(run.created_at)),
      el("td", { class: "num" }, fmtInt(run.cases)),
      el("td", null, run.prompts.join(", ")),
      el("td", null, run.models.join(", ")),
      el("td", null, headline(run)),
      el(
        "td",
        { class: "num" },
        `${fmtInt(run.done)}/${fmtInt(run.total)}`,
        run.errors ? el("span", { class: "bad-text" }, ` · ${fmtInt(run.errors)} failed`) : null,
      ),
    );
  });
  $("runs").replaceChildren(
    table(
      [
        "A",
        "B",
        "Run",
        "Suite",
        "Status",
        "Started",
        "Cases",
        "Prompts",
        "Models",
        "Means",
        "Answers",
      ],
      rows,
      "runs",
    ),
  );
}

$("suite").addEventListener("change", loadRuns);

$("compare").addEventListener("click", () => {
  const base = document.querySelector("input[name=base]:checked")?.value;
  const head = document.querySelector("input[name=head]:checked")?.value;
  $("comparison").hidden = false;
  if (!base || !head) {
    showError(
      $("comparison-body"),
      "Pick a base run in column A and a head run in column B, then compare.",
    );
    return;
  }
  go({ base, head });
});

// -- one run: the matrix ----------------------------------------------------------------

async function loadRun(id) {
  const mine = ++seq.run;
  const box = $("run-body");
  $("run").hidden = false;
  $("run-title").textContent = `Run ${id.slice(0, 8)}`;
  loading(box, "Loading the run…");
  try {
    const run = await api(`/v1/evals/runs/${encodeURIComponent(id)}`);
    if (mine !== seq.run) return null;
    $("run-title").textContent = `Run ${run.id.slice(0, 8)} · ${run.suite}`;
    box.replaceChildren(runHead(run), reportLinks(run), matrix(run));
    return run;
  } catch (err) {
    if (mine !== seq.run) return null;
    showError(box, err.message);
    return null;
  }
}

function runHead(run) {
  const items = [
    ["Run", run.id],
    ["Suite", run.suite],
    ["Status", run.status],
    ["Started", fmtTime(run.created_at)],
    ["Finished", run.finished_at ? fmtTime(run.finished_at) : "—"],
    ["Answers", `${fmtInt(run.done)} of ${fmtInt(run.total)} (${fmtInt(run.errors)} failed)`],
    ["Cases", fmtInt(run.cases)],
  ];
  const list = el(
    "dl",
    { class: "pairs" },
    items.map(([k, v]) => [el("dt", null, k), el("dd", null, v)]),
  );
  const notes = run.unreadable.length
    ? el(
        "div",
        { class: "error", role: "alert" },
        `${run.unreadable.length} stored answer(s) could not be read: ${run.unreadable[0]}`,
      )
    : null;
  return el("div", { class: "run-head" }, list, notes);
}

function reportLinks(run) {
  const path = `/v1/evals/runs/${encodeURIComponent(run.id)}/report`;
  const status = el("span", { class: "hint", role: "status" });
  const download = el(
    "button",
    { type: "button", class: "small", id: "download-report" },
    "Download report",
  );
  download.addEventListener("click", async () => {
    status.textContent = "Preparing…";
    try {
      const response = await request(path);
      const url = URL.createObjectURL(await response.blob());
      const a = el("a", { href: url, download: `report-${run.id.slice(0, 8)}.html` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      status.textContent = "";
    } catch (err) {
      status.textContent = `Not downloaded: ${err.message}`;
    }
  });
  // A link cannot carry the key: with one saved, the report comes as a file.
  const open = apiKey()
    ? null
    : el(
        "a",
        { href: path, target: "_blank", rel: "noopener", class: "report-link" },
        "Open the HTML report ↗",
      );
  return el("div", { class: "actions" }, open, download, status);
}

function matrix(run) {
  if (!run.cells.length) {
    return el("p", { class: "hint" }, "No answers in this run yet.");
  }
  const metrics = run.metrics;
  const head = ["Cell", ...metrics.map((m) => m.name), "Errors", "p50 latency", "Cost", "Tokens"];
  const rows = run.cells.map((cell) => {
    const values = metrics.map((m) => {
      const s = cell.metrics[m.name];
      const all = run.cells.map((c) => c.metrics[m.name]?.mean).filter((v) => v !== null);
      if (!s || s.mean === null) return el("td", { class: "num" }, "—");
      const level = heat(m.higher_is_better, s.mean, all);
      const half = s.ci_high !== null && s.ci_low !== null ? (s.ci_high - s.ci_low) / 2 : 0;
      const text = fmtMetric(m.name, s.mean) + (half > 0 ? ` ± ${fmtMetric(m.name, half)}` : "");
      const mark =
        s.passed === null
          ? null
          : el("span", { class: s.passed ? "pass" : "fail" }, s.passed ? " ✓" : " ✗");
      const title =
        `${m.name}: mean ${fmtMetric(m.name, s.mean)}, 95% interval ` +
        `${fmtMetric(m.name, s.ci_low)} to ${fmtMetric(m.name, s.ci_high)}, n = ${s.n}` +
        (s.threshold !== null ? `, threshold ${s.threshold}` : "");
      return el(
        "td",
        {
          class: `num score${level === null ? "" : ` heat-${level}`}`,
          title,
          dataset: { metric: m.name, mean: String(s.mean) },
        },
        text,
        mark,
      );
    });
    const open = el(
      "button",
      { type: "button", class: "cell-link link" },
      el("span", { class: "prompt" }, cell.prompt),
      " × ",
      el("span", null, cell.model),
    );
    open.addEventListener("click", () => go({ cell: cell.cell }));
    return el(
      "tr",
      {
        dataset: { cell: cell.cell },
        "aria-current": params().get("cell") === cell.cell ? "true" : null,
      },
      el("th", { scope: "row" }, open),
      values,
      el("td", { class: `num${cell.errors ? " bad-text" : ""}` }, fmtInt(cell.errors)),
      el("td", { class: "num" }, fmtMs(cell.latency_p50_ms)),
      el("td", { class: "num" }, fmtCost(cell.cost_usd)),
      el("td", { class: "num" }, fmtInt(cell.tokens)),
    );
  });
  return el(
    "div",
    { class: "matrix-box" },
    el("h3", null, "Matrix: mean ± half the 95% interval; click a cell for its cases"),
    table(head, rows, "matrix"),
  );
}

// -- a cell's cases ---------------------------------------------------------------------

async function loadCases(id, cell) {
  const mine = ++seq.cases;
  const box = $("cases-body");
  $("cases").hidden = false;
  $("cases-title").textContent = `Cases · ${cell}`;
  loading(box, "Loading the cases…");
  const query = new URLSearchParams({ cell, limit: "1000" });
  try {
    const body = await api(`/v1/evals/runs/${encodeURIComponent(id)}/results?${query}`);
    if (mine !== seq.cases) return;
    const metrics = [...new Set(body.data.flatMap((r) => Object.keys(r.scores)))];
    const rows = body.data.map((r) =>
      el(
        "tr",
        { dataset: { case: r.case_id, status: r.status } },
        el("td", null, el("code", null, r.case_id), r.repeat ? ` #${r.repeat}` : ""),
        el("td", null, el("div", { class: "text" }, r.input)),
        el(
          "td",
          null,
          el("div", { class: "text output" }, r.output),
          r.error ? el("div", { class: "error" }, r.error) : null,
        ),
        el("td", null, el("div", { class: "text" }, r.expected.join("\n"))),
        metrics.map((m) =>
          el(
            "td",
            { class: "num", title: r.reasons[m] || null, dataset: { metric: m } },
            fmtMetric(m, r.scores[m] ?? null),
          ),
        ),
        el(
          "td",
          null,
          r.trace_id
            ? el("a", { href: traceHref(r.trace_id), class: "trace-link" }, "Trace →")
            : el("span", { class: "hint" }, r.cached ? "cached" : "—"),
        ),
      ),
    );
    const more =
      body.total > body.data.length
        ? el("p", { class: "hint" }, `Showing ${body.data.length} of ${body.total} answers.`)
        : null;
    const unreadable = body.unreadable.length
      ? el(
          "div",
          { class: "error", role: "alert" },
          `${body.unreadable.length} answer(s) could not be read: ${body.unreadable[0]}`,
        )
      : null;
    box.replaceChildren(
      ...[
        unreadable,
        table(["Case", "Input", "Output", "Expected", ...metrics, "Trace"], rows, "cases"),
        more,
      ].filter(Boolean),
    );
  } catch (err) {
    if (mine !== seq.cases) return;
    showError(box, err.message);
  }
}

// -- two runs compared ------------------------------------------------------------------

const VERDICTS = {
  improved: "improved",
  regressed: "regressed",
  "no significant change": "same",
  identical: "same",
  "too few cases": "few",
};

async function loadComparison(base, head) {
  const mine = ++seq.comparison;
  const box = $("comparison-body");
  $("comparison").hidden = false;
  loading(box, "Comparing…");
  const query = new URLSearchParams({ base, head });
  try {
    const body = await api(`/v1/evals/compare?${query}`);
    if (mine !== seq.comparison) return;
    const counts = {};
    for (const c of body.comparisons) counts[c.verdict] = (counts[c.verdict] || 0) + 1;
    const summary = Object.entries(counts)
      .map(([verdict, n]) => `${n} ${verdict}`)
      .join(" · ");
    const rows = body.comparisons.map((c) => {
      const ci =
        c.ci_low === null
          ? "—"
          : `[${fmtSigned(c.metric, c.ci_low)}, ${fmtSigned(c.metric, c.ci_high)}]`;
      return el(
        "tr",
        { dataset: { verdict: c.verdict, metric: c.metric } },
        el("td", null, c.cell),
        el(
          "td",
          null,
          c.metric,
          c.higher_is_better ? "" : el("span", { class: "hint" }, " (lower is better)"),
        ),
        el("td", { class: "num" }, fmtInt(c.n)),
        el("td", { class: "num" }, fmtMetric(c.metric, c.mean_a)),
        el("td", { class: "num" }, fmtMetric(c.metric, c.mean_b)),
        el("td", { class: "num" }, fmtSigned(c.metric, c.diff)),
        el("td", { class: "num" }, ci),
        el("td", { class: "num" }, c.p_value.toFixed(3)),
        el("td", null, badge(c.verdict, `verdict-${VERDICTS[c.verdict] || "same"}`)),
      );
    });
    const parts = [
      el(
        "p",
        null,
        "A = ",
        el("code", null, body.base.label),
        ` (${body.base.suite}) · B = `,
        el("code", null, body.head.label),
        ` · significance level ${body.alpha}`,
      ),
      el("p", { class: "verdicts", role: "status" }, summary || "No metric to compare."),
      table(
        ["Cell", "Metric", "n", "A", "B", "B − A", "95% CI", "p", "Verdict"],
        rows,
        "comparison",
      ),
      body.unpaired_cases
        ? el(
            "p",
            { class: "hint" },
            `${body.unpaired_cases} case(s) appear in one run only and are left out.`,
          )
        : null,
    ];
    box.replaceChildren(...parts.filter(Boolean));
  } catch (err) {
    if (mine !== seq.comparison) return;
    showError(box, err.message);
  }
}

// -- what the address asks for ------------------------------------------------------------

async function route() {
  const query = params();
  const run = query.get("run");
  const cell = query.get("cell");
  const base = query.get("base");
  const head = query.get("head");
  showRuns();
  if (base || head) {
    if (base && head) loadComparison(base, head);
    else {
      $("comparison").hidden = false;
      showError($("comparison-body"), "A comparison needs both runs: base (A) and head (B).");
    }
  } else {
    $("comparison").hidden = true;
  }
  if (run) {
    const found = await loadRun(run);
    if (cell && found) loadCases(found.id, cell);
    else $("cases").hidden = true;
  } else {
    $("run").hidden = true;
    $("cases").hidden = true;
  }
}

header("evals", () => loadRuns().then(route));
loadRuns().then(route);
