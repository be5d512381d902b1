// The Models page: the catalog with the CLI's filters (GET /v1/catalog/models), one model's
// details, the recommender (GET /v1/catalog/recommend) and the sizing calculator
// (POST /v1/catalog/size), which answers as the fields change. Filters live in the address.

import { api, el, fmtInt, header, showError, svg } from "./common.js";

const $ = (id) => document.getElementById(id);
const FILTERS = ["task", "modality", "kind", "min_context", "max_price", "licence", "local"];
const SIZE_DELAY_MS = 200;

let everything = []; // the whole catalog, for the sizing calculator's model list
let shown = []; // the models the filters let through
let asOf = null; // the date of the catalog's figures
let sizeTimer = null;
let sizeSeq = 0;
let catalogSeq = 0;

// -- formatting ---------------------------------------------------------------------------

/** Bytes as the CLI shows them: GiB from 1 GiB up, else MiB. */
function fmtGiB(n) {
  if (n >= 2 ** 30) {
    const value = (n / 2 ** 30).toLocaleString("en-US", {
      minimumFractionDigits: 2,
      maximumFractionDigits: 2,
    });
    return `${value} GiB`;
  }
  return `${Math.round(n / 2 ** 20).toLocaleString("en-US")} MiB`;
}

function fmtParams(n) {
  if (!n) return "—";
  if (n >= 1e9) return `${Number((n / 1e9).toPrecision(3))}B`;
  return `${Number((n / 1e6).toPrecision(3))}M`;
}

function fmtGB(n, digits) {
  return `${(n / 1e9).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  })} GB`;
}

function priceText(m) {
  if (m.price) return m.price.text;
  return m.runs_locally ? "free here (runs locally)" : "no listed price";
}

// -- the catalog --------------------------------------------------------------------------

function readAddress() {
  const query = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    const value = query.get(name);
    if (value !== null) $(name).value = value;
  }
}

function writeAddress() {
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    const value = $(name).value.trim();
    if (value) query.set(name, value);
  }
  const text = query.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
}

function fillChoices(body) {
  const options = (values) => values.map((v) => el("option", { value: v }, v));
  if (!$("use-cases").children.length) $("use-cases").replaceChildren(...options(body.use_cases));
  for (const [id, values] of [
    ["modality", body.modalities],
    ["kind", body.kinds],
  ]) {
    const select = $(id);
    if (select.options.length > 1) continue;
    const chosen = select.value;
    select.append(...options(values));
    select.value = chosen;
  }
}

async function loadCatalog() {
  const mine = ++catalogSeq;
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    const value = $(name).value.trim();
    if (value) query.set(name, value);
  }
  try {
    const body = await api(`/v1/catalog/models?${query}`);
    if (mine !== catalogSeq) return;
    $("catalog-error").replaceChildren();
    fillChoices(body);
    shown = body.data;
    asOf = body.as_of;
    showCount();
    showCatalog();
  } catch (err) {
    if (mine !== catalogSeq) return;
    showError($("catalog-error"), `The catalog could not be shown: ${err.message}`);
    $("catalog").classList.add("stale");
  }
}

function showCount() {
  if (asOf === null) return;
  const total = everything.length ? ` of ${everything.length}` : "";
  $("count").textContent = `${shown.length}${total} models · figures as of ${asOf}`;
}

function showCatalog() {
  const box = $("catalog");
  box.classList.remove("stale");
  if (!shown.length) {
    box.replaceChildren(el("p", { class: "hint" }, "No model in the catalog matches; loosen a filter."));
    return;
  }
  const head = ["Model", "Provider", "Kind", "Parameters", "Context", "Price", "Runs here", "Good for"];
  box.replaceChildren(
    el(
      "table",
      { class: "catalog-table" },
      el("thead", null, el("tr", null, head.map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        null,
        shown.map((m) =>
          el(
            "tr",
            { dataset: { model: m.id } },
            el(
              "td",
              null,
              el(
                "button",
                { type: "button", class: "link", onclick: () => showDetails(m) },
                m.name,
              ),
              el("div", { class: "hint" }, m.id),
            ),
            el("td", null, m.provider),
            el("td", null, m.kind),
            el("td", { class: "num" }, fmtParams(m.parameters)),
            el("td", { class: "num" }, m.context ? fmtInt(m.context) : "—"),
            el("td", null, priceText(m)),
            el("td", null, m.runs_locally ? (m.installed_with_outcrop ? "installed" : "yes") : "no"),
            el("td", null, m.use_cases.slice(0, 4).join(", ")),
          ),
        ),
      ),
    ),
  );
}

function pair(term, ...value) {
  return [el("dt", null, term), el("dd", null, ...value)];
}

function showDetails(m) {
  for (const row of document.querySelectorAll(".catalog-table tbody tr")) {
    if (row.dataset.model === m.id) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  const a = m.architecture;
  const p = m.packaged;
  const rows = [
    pair("Ids", m.ids.join(", ")),
    pair("Provider", `${m.provider}; ${m.kind}`),
    pair("Licence", m.licence, m.open_weights ? " (open weights)" : " (closed weights)"),
    m.parameters
      ? pair(
          "Parameters",
          `${fmtParams(m.parameters)} (${fmtInt(m.parameters)})`,
          m.active_parameters ? `, ${fmtParams(m.active_parameters)} active a token` : "",
          m.approximate.includes("parameters") ? " (approximate)" : "",
        )
      : null,
    m.context ? pair("Context", `${fmtInt(m.context)} tokens`) : null,
    m.dimensions ? pair("Dimensions", fmtInt(m.dimensions)) : null,
    a
      ? pair(
          "Shape",
          `${a.family}: ${a.layers} layers, hidden ${fmtInt(a.hidden)}, ${a.heads} heads, ` +
            `${a.kv_heads} KV heads${a.kv_heads < a.heads ? " (grouped-query)" : ""}, ` +
            `vocabulary ${fmtInt(a.vocab)}` +
            (a.experts ? `, ${a.experts} experts (${a.experts_per_token} a token)` : ""),
        )
      : null,
    pair(
      "Price",
      priceText(m),
      m.price ? el("span", { class: "hint" }, ` (as of ${m.price.as_of}; ${m.price.source})`) : "",
    ),
    pair("Runs here", m.runs_locally ? "yes" : "no (hosted)"),
    p
      ? pair(
          "Installed file",
          `${p.format} ${p.quantisation}, ${fmtGiB(p.file_bytes)}, from the package ${p.package}`,
        )
      : null,
    pair("Good for", m.use_cases.join(", ")),
    pair("Strengths", m.strengths),
    m.notes ? pair("Notes", m.notes) : null,
    pair(
      "Sources",
      el(
        "ul",
        { class: "sources" },
        Object.entries(m.sources).map(([figure, where]) => el("li", null, `${figure}: ${where}`)),
      ),
    ),
  ];
  const sizeIt = m.parameters
    ? el(
        "button",
        {
          type: "button",
          id: "size-this",
          onclick: () => {
            $("what-model").checked = true;
            $("size-model").value = m.id;
            scheduleSize(0);
            $("size-form").scrollIntoView({ block: "nearest" });
          },
        },
        "Size this model",
      )
    : el("p", { class: "hint" }, "No published parameter count: size it by parameters instead.");
  $("details").replaceChildren(
    el("h3", { class: "model-name" }, m.name),
    el("dl", { class: "pairs details" }, rows),
    sizeIt,
  );
}

// -- the sizing calculator ----------------------------------------------------------------

function sizeBody() {
  const body = {};
  if ($("what-params").checked) body.params = $("size-params").value.trim();
  else body.model = $("size-model").value;
  if ($("precision").value) body.precision = $("precision").value;
  const context = $("context").value.trim();
  if (context) body.context = Number(context);
  const batch = $("batch").value.trim();
  if (batch) body.batch = Number(batch);
  body.kv_cache_type = $("kv-cache").value || "f16";
  return body;
}

function scheduleSize(delay = SIZE_DELAY_MS) {
  clearTimeout(sizeTimer);
  sizeTimer = setTimeout(runSize, delay);
}

async function runSize() {
  const mine = ++sizeSeq;
  const body = sizeBody();
  const error = $("size-error");
  if (body.params === "") {
    showError(error, "Write a parameter count, e.g. 7B, 135M or 1.5e9.");
    $("size-out").classList.add("stale");
    $("fits").classList.add("stale");
    return;
  }
  try {
    const report = await api("/v1/catalog/size", { method: "POST", body });
    if (mine !== sizeSeq) return;
    error.replaceChildren();
    showSize(report);
  } catch (err) {
    if (mine !== sizeSeq) return;
    showError(error, err.message);
    $("size-out").classList.add("stale");
    $("fits").classList.add("stale");
  }
}

function figure(label, bytes, detail, cls) {
  return el(
    "tr",
    { class: cls || null, dataset: { figure: label } },
    el("th", { scope: "row" }, label),
    el("td", { class: "num value" }, fmtGiB(bytes)),
    el("td", { class: "hint" }, detail || ""),
  );
}

/** One bar: the weights, the KV cache and the working memory, to scale. */
function bar(report) {
  const parts = [
    ["weights", report.weights, "s1"],
    ["KV cache", report.kv_cache, "s2"],
    ["working memory", report.working, "s3"],
  ];
  const total = report.inference_total || 1;
  let x = 0;
  const rects = parts.map(([name, value, cls]) => {
    const width = (400 * value) / total;
    const rect = svg(
      "rect",
      { x: x.toFixed(2), y: "0", width: width.toFixed(2), height: "14", class: cls },
      svg("title", null, `${name}: ${fmtGiB(value)}`),
    );
    x += width;
    return rect;
  });
  return el(
    "figure",
    { class: "size-bar" },
    svg(
      "svg",
      {
        viewBox: "0 0 400 14",
        preserveAspectRatio: "none",
        class: "memory",
        role: "img",
        "aria-label": "Memory to run it",
      },
      rects,
    ),
    el(
      "figcaption",
      { class: "legend" },
      parts.map(([name, , cls]) => el("span", null, el("span", { class: `swatch ${cls}` }), name)),
    ),
  );
}

function showSize(r) {
  const a = r.architecture;
  const kv = r.kv_per_token
    ? `${fmtInt(Math.round(r.kv_per_token / 1024))} KiB a token × ${fmtInt(r.context)} tokens × ${r.batch}`
    : "unknown (layers and KV heads unknown)";
  $("size-out").classList.remove("stale");
  $("fits").classList.remove("stale");
  $("size-figures").replaceChildren(
    el(
      "h3",
      { class: "sized" },
      `${a.name || fmtParams(a.params)}: ${fmtParams(a.params)} parameters (${a.source})`,
    ),
    el(
      "table",
      { class: "figures" },
      el("tbody", null, el("tr", null, el("th", { colspan: "3", class: "group" }, "To run it"))),
      el(
        "tbody",
        null,
        figure(`Weights (${r.precision})`, r.weights),
        figure(`KV cache (${r.kv_cache_type})`, r.kv_cache, kv),
        figure("Working memory (llama.cpp)", r.working),
        figure("Total", r.inference_total, "", "total"),
      ),
      el(
        "tbody",
        null,
        el("tr", null, el("th", { colspan: "3", class: "group" }, "To fine-tune it (sequence length 2,048)")),
        figure("Full, mixed-precision Adam", r.training_full),
        figure("… with activation checkpointing", r.training_full_checkpointed),
        figure("LoRA (rank 16)", r.training_lora, `${fmtParams(r.lora_params)} adapter parameters`),
        figure("QLoRA (rank 16, 4-bit base)", r.training_qlora),
      ),
    ),
    bar(r),
  );
  $("rule").replaceChildren(
    el("h3", null, "The rule of thumb"),
    el(
      "p",
      { class: "rule-figures" },
      `${fmtParams(a.params)} × 4 bytes = `,
      el("strong", { dataset: { rule: "weights" } }, fmtGB(r.rule_of_thumb_weights, 1)),
      " of fp32 weights; × 20 = ",
      el("strong", { dataset: { rule: "training" } }, fmtGB(r.rule_of_thumb_training, 0)),
      " to train.",
    ),
    el(
      "p",
      { class: "hint" },
      "The figures beside it differ: they use the precision asked for, add the KV cache and " +
        "working memory, and count training as 16 bytes a parameter plus activations.",
    ),
  );
  const yes = (ok) => el("td", { class: ok ? "pass" : "fail" }, ok ? "yes" : "no");
  $("fits").replaceChildren(
    el(
      "table",
      { class: "fits" },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          ["Fits on", "Memory", "Run", "LoRA", "QLoRA", "Full training", "Tokens/s"].map((h) =>
            el("th", { scope: "col" }, h),
          ),
        ),
      ),
      el(
        "tbody",
        null,
        r.fits.map((f) =>
          el(
            "tr",
            { dataset: { device: f.device } },
            el("th", { scope: "row" }, f.device),
            el("td", { class: "num" }, `${f.memory_gb} GB`),
            yes(f.inference),
            yes(f.lora),
            yes(f.qlora),
            yes(f.full_training),
            el(
              "td",
              { class: "num", title: "Bound by memory bandwidth when decoding" },
              f.tokens_per_s ? fmtInt(Math.round(f.tokens_per_s)) : "—",
            ),
          ),
        ),
      ),
    ),
  );
  $("size-notes").replaceChildren(...r.notes.map((n) => el("li", { class: "hint" }, n)));
}

async function loadSizing() {
  try {
    const [choices, all] = await Promise.all([
      api("/v1/catalog/size"),
      api("/v1/catalog/models"),
    ]);
    everything = all.data;
    const precision = $("precision");
    const chosen = precision.value;
    precision.replaceChildren(
      el("option", { value: "" }, "fp16 (default)"),
      ...choices.precisions.map((p) => el("option", { value: p }, p)),
    );
    precision.value = chosen;
    $("kv-cache").replaceChildren(
      ...choices.kv_cache_types.map((t) => el("option", { value: t }, t)),
    );
    $("kv-cache").value = "f16";
    const sizable = everything.filter((m) => m.parameters);
    $("size-model").replaceChildren(
      ...sizable.map((m) => el("option", { value: m.id }, `${m.name} (${fmtParams(m.parameters)})`)),
    );
    const first = sizable.find((m) => m.installed_with_outcrop) || sizable[0];
    if (first) $("size-model").value = first.id;
    showCount();
    scheduleSize(0);
  } catch (err) {
    showError($("size-error"), `The calculator could not start: ${err.message}`);
  }
}

// -- recommending -------------------------------------------------------------------------

async function recommendModels(event) {
  event.preventDefault();
  const box = $("picks");
  const task = $("task-words").value.trim();
  if (!task) {
    showError(box, "Describe the task first, e.g. summarise long contracts.");
    return;
  }
  const query = new URLSearchParams({ task, top: "5" });
  const budget = $("budget").value.trim();
  if (budget) query.set("budget", budget);
  if ($("rec-local").checked) query.set("local", "true");
  $("recommend").disabled = true;
  try {
    const body = await api(`/v1/catalog/recommend?${query}`);
    box.replaceChildren(
      el("p", { class: "hint" }, `Read as: ${body.read_as}`),
      body.data.length
        ? el(
            "ol",
            { class: "picks" },
            body.data.map((p) =>
              el(
                "li",
                { dataset: { model: p.model } },
                el(
                  "button",
                  { type: "button", class: "link", onclick: () => showDetails(p.entry) },
                  p.model,
                ),
                ` (${p.name}, score ${p.score.toFixed(2)})`,
                el("div", { class: "hint" }, p.reasons.join("; ")),
              ),
            ),
          )
        : el(
            "p",
            { class: "hint" },
            "No catalog model meets those constraints; raise the budget or allow hosted models.",
          ),
    );
  } catch (err) {
    showError(box, err.message);
  } finally {
    $("recommend").disabled = false;
  }
}

// -- start --------------------------------------------------------------------------------

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  writeAddress();
  loadCatalog();
});
for (const id of ["modality", "kind", "local"]) {
  $(id).addEventListener("change", () => {
    writeAddress();
    loadCatalog();
  });
}
$("reset").addEventListener("click", () => {
  for (const name of FILTERS) $(name).value = "";
  writeAddress();
  loadCatalog();
});
const sizeForm = $("size-form");
sizeForm.addEventListener("submit", (event) => event.preventDefault());
sizeForm.addEventListener("input", () => scheduleSize());
sizeForm.addEventListener("change", () => scheduleSize());
$("size-params").addEventListener("focus", () => {
  $("what-params").checked = true;
});
$("size-model").addEventListener("focus", () => {
  $("what-model").checked = true;
});
$("recommend-form").addEventListener("submit", recommendModels);

header("models", () => {
  loadCatalog();
  loadSizing();
});
readAddress();
loadCatalog();
loadSizing();
