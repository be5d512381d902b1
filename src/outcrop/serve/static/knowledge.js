// The Knowledge page: knowledge bases (GET/POST /v1/knowledge-bases), uploads with a result
// per file (POST …/documents), answers with numbered citations that open on the passage
// they cite (POST …/ask), search with the score of every stage (POST …/search), and the
// documents list. The chosen knowledge base lives in the address (?kb=NAME).

import {
  api,
  el,
  feedbackForm,
  fmtInt,
  fmtTime,
  header,
  showError,
  traceHref,
} from "./common.js";

const $ = (id) => document.getElementById(id);
// Models that cannot chat (embedders, image models), where the server does not say a kind.
const NOT_CHAT = /embed|minilm|dall-e|image|diffusion|rerank|whisper|tts/i;
const MULTIPART_MARGIN = 16 * 1024; // form boundaries and part headers, with room to spare
const STATUS_WORDS = {
  added: "added",
  updated: "updated",
  unchanged: "unchanged",
  skipped: "skipped",
  failed: "not sent",
};

let limits = null; // the server's upload limits, from GET /v1/knowledge-bases
let current = null; // the chosen knowledge base's name
let seq = 0;

const enc = encodeURIComponent;
const kbPath = (name, rest = "") => `/v1/knowledge-bases/${enc(name)}${rest}`;

function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${n} bytes`;
}

function plural(n, word) {
  return `${fmtInt(n)} ${word}${n === 1 ? "" : "s"}`;
}

// -- the list and creating ----------------------------------------------------------------

async function loadList() {
  const box = $("kb-list");
  try {
    const body = await api("/v1/knowledge-bases");
    limits = body.upload;
    $("types").textContent =
      `Types: ${limits.types.join(", ")}. Up to ${fmtBytes(fileLimit())} a file; ` +
      "a file sent again replaces its earlier version.";
    $("banner").replaceChildren();
    if (!body.data.length) {
      box.replaceChildren(el("p", { class: "hint" }, "No knowledge bases yet."));
      return body.data;
    }
    box.replaceChildren(
      el(
        "ul",
        { class: "kb-list" },
        body.data.map((kb) =>
          el(
            "li",
            { dataset: { kb: kb.name } },
            el(
              "a",
              {
                href: `?kb=${enc(kb.name)}`,
                "aria-current": kb.name === current ? "true" : null,
                onclick: (event) => {
                  event.preventDefault();
                  choose(kb.name);
                },
              },
              kb.name,
            ),
            kb.error
              ? el("div", { class: "bad-text small-text" }, kb.error)
              : el(
                  "div",
                  { class: "hint" },
                  `${plural(kb.documents, "document")} · ${plural(kb.chunks, "chunk")}` +
                    (kb.size_bytes === null ? "" : ` · ${fmtBytes(kb.size_bytes)}`),
                ),
          ),
        ),
      ),
    );
    return body.data;
  } catch (err) {
    box.replaceChildren();
    showError($("banner"), `The knowledge bases could not be listed: ${err.message}`);
    return null;
  }
}

async function create(event) {
  event.preventDefault();
  const status = $("create-status");
  const name = $("new-name").value.trim();
  if (!name) {
    showError(status, "Write a name first, e.g. handbook.");
    return;
  }
  $("create").disabled = true;
  try {
    const made = await api("/v1/knowledge-bases", { method: "POST", body: { name } });
    $("new-name").value = "";
    status.replaceChildren(el("p", { class: "hint", role: "status" }, `Created ${made.name}.`));
    await loadList();
    choose(made.name);
  } catch (err) {
    showError(status, err.message); // the name stays in the field, to correct
  } finally {
    $("create").disabled = false;
  }
}

// -- one knowledge base -------------------------------------------------------------------

function writeAddress() {
  history.replaceState(null, "", current ? `?kb=${enc(current)}` : location.pathname);
}

function markCurrent() {
  for (const link of document.querySelectorAll(".kb-list a")) {
    const chosen = link.closest("li").dataset.kb === current;
    if (chosen) link.setAttribute("aria-current", "true");
    else link.removeAttribute("aria-current");
  }
}

async function choose(name) {
  if (name !== current) {
    $("upload-results").replaceChildren();
    $("answer").replaceChildren();
    $("results").replaceChildren();
  }
  current = name;
  writeAddress();
  markCurrent();
  await refresh();
}

async function refresh() {
  if (!current) {
    $("kb-view").hidden = true;
    $("empty").hidden = false;
    return;
  }
  const mine = ++seq;
  try {
    const kb = await api(kbPath(current));
    if (mine !== seq) return;
    $("empty").hidden = true;
    $("kb-view").hidden = false;
    $("banner").replaceChildren();
    $("kb-title").textContent = kb.name;
    $("kb-stats").textContent =
      `${plural(kb.documents, "document")} · ${plural(kb.chunks, "chunk")} · ` +
      `${fmtInt(kb.tokens)} tokens · embedder ${kb.embedder}` +
      (kb.size_bytes === null ? "" : ` · ${fmtBytes(kb.size_bytes)}`);
    showDocuments(kb.documents_list);
  } catch (err) {
    if (mine !== seq) return;
    $("kb-view").hidden = true;
    $("empty").hidden = false;
    showError($("banner"), err.message);
  }
}

function showDocuments(docs) {
  const box = $("documents");
  if (!docs.length) {
    box.replaceChildren(el("p", { class: "hint" }, "No documents yet: add some above."));
    return;
  }
  const head = ["Source", "Title", "Type", "Pages", "Chunks", "Added", ""];
  box.replaceChildren(
    el(
      "table",
      { class: "documents" },
      el("thead", null, el("tr", null, head.map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        null,
        docs.map((d) =>
          el(
            "tr",
            { dataset: { source: d.source } },
            el("td", null, d.source),
            el("td", null, d.title || ""),
            el("td", null, d.type || ""),
            el("td", { class: "num" }, d.pages ?? ""),
            el("td", { class: "num" }, fmtInt(d.chunks)),
            el("td", null, fmtTime(d.added_at), d.uploaded ? "" : el("span", { class: "hint" }, " (folder)")),
            el("td", null, removeButton(d.source)),
          ),
        ),
      ),
    ),
  );
}

/** Remove asks once more before it removes: a second click within a few seconds. */
function removeButton(source) {
  const button = el("button", { type: "button", class: "small remove-doc" }, "Remove");
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = "Click again to remove";
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = "Remove";
        button.classList.remove("armed");
      }, 4000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    try {
      await api(kbPath(current, `/documents/${enc(source)}`), { method: "DELETE" });
      await Promise.all([refresh(), loadList()]);
    } catch (err) {
      button.disabled = false;
      showError($("banner"), `${source} was not removed: ${err.message}`);
    }
  });
  return button;
}

// -- uploading ----------------------------------------------------------------------------

/** The largest file this server takes in one request. */
function fileLimit() {
  return Math.min(limits.max_file_bytes, limits.max_body_bytes - MULTIPART_MARGIN);
}

/** Files in requests that each stay under the server's limits; files too large alone. */
function batches(files) {
  const out = [];
  const tooLarge = [];
  let batch = [];
  let size = 0;
  for (const file of files) {
    if (file.size > fileLimit()) {
      tooLarge.push(file);
      continue;
    }
    const cost = file.size + 1024;
    const full = size + cost > limits.max_body_bytes - MULTIPART_MARGIN;
    if (batch.length && (full || batch.length >= limits.max_files)) {
      out.push(batch);
      batch = [];
      size = 0;
    }
    batch.push(file);
    size += cost;
  }
  if (batch.length) out.push(batch);
  return { out, tooLarge };
}

async function upload(fileList) {
  const files = [...fileList];
  if (!files.length || !current) return;
  if (!limits) await loadList();
  if (!limits) return;
  const name = current;
  const box = $("upload-results");
  const input = $("files");
  input.disabled = true;
  box.replaceChildren(
    el("p", { class: "hint", role: "status" }, `Adding ${plural(files.length, "file")}…`),
  );
  const rows = [];
  const totals = { chunks: 0, seconds: 0 };
  const { out, tooLarge } = batches(files);
  for (const file of tooLarge) {
    rows.push({
      file: file.name,
      status: "skipped",
      reason:
        `${fmtBytes(file.size)}, larger than the ${fmtBytes(fileLimit())} this server takes ` +
        "for one file; split it, or start outcrop serve with a larger --max-body-mb",
    });
  }
  for (const batch of out) {
    const form = new FormData();
    for (const file of batch) form.append("files", file, file.name);
    try {
      const report = await api(kbPath(name, "/documents"), { method: "POST", body: form });
      rows.push(...report.files);
      totals.chunks += report.chunks;
      totals.seconds += report.seconds;
    } catch (err) {
      for (const file of batch) rows.push({ file: file.name, status: "failed", reason: err.message });
    }
  }
  input.disabled = false;
  input.value = "";
  showUploads(rows, totals);
  await Promise.all([refresh(), loadList()]);
}

function showUploads(rows, totals) {
  const count = (status) => rows.filter((r) => r.status === status).length;
  const parts = ["added", "updated", "unchanged", "skipped", "failed"]
    .filter((s) => count(s))
    .map((s) => `${count(s)} ${STATUS_WORDS[s]}`);
  const bad = count("skipped") + count("failed");
  $("upload-results").replaceChildren(
    el(
      "p",
      { class: bad ? "upload-summary has-problems" : "upload-summary", role: "status" },
      `${parts.join(", ")}; ${plural(totals.chunks, "chunk")} written in ${totals.seconds.toFixed(1)} s.`,
      bad ? " Files skipped or not sent changed nothing already stored." : "",
    ),
    el(
      "table",
      { class: "uploads" },
      el(
        "thead",
        null,
        el("tr", null, ["File", "Result", "Why"].map((h) => el("th", { scope: "col" }, h))),
      ),
      el(
        "tbody",
        null,
        rows.map((r) =>
          el(
            "tr",
            { dataset: { file: r.file, status: r.status } },
            el("td", null, r.file),
            el("td", null, el("span", { class: `badge upload-${r.status}` }, STATUS_WORDS[r.status])),
            el(
              "td",
              { role: r.reason ? "alert" : null },
              r.reason || (r.documents > 1 ? `${r.documents} records` : ""),
            ),
          ),
        ),
      ),
    ),
  );
}

function setUpDrop() {
  const zone = $("drop");
  // A file dropped beside the zone would make the browser leave the page to open it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload(event.dataTransfer.files);
  });
  $("files").addEventListener("change", (event) => upload(event.target.files));
}

// -- asking -------------------------------------------------------------------------------

async function loadModels() {
  const select = $("ask-model");
  const chosen = select.value;
  try {
    const body = await api("/v1/models");
    const chat = body.data.filter((m) => (m.kind ? m.kind === "chat" : !NOT_CHAT.test(m.id)));
    const fallback = chat.find((m) => m.default);
    select.replaceChildren(
      el("option", { value: "" }, fallback ? `server default (${fallback.id})` : "server default"),
      ...chat.map((m) => el("option", { value: m.id }, m.id)),
    );
    select.value = chosen;
  } catch {
    // Asking still works with the server's default; the banner says what is wrong.
  }
}

function citationId(n) {
  return `cite-${n}`;
}

function openCitation(n) {
  const item = $(citationId(n));
  if (!item) return;
  item.open = true;
  item.scrollIntoView({ block: "nearest" });
  item.querySelector("summary").focus();
}

/** The answer's text, each [n] it cites a button that opens the passage. */
function answerText(text, citations) {
  const byNumber = new Map(citations.map((c) => [c.number, c]));
  const box = el("div", { class: "answer-text" });
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    box.append(text.slice(last, match.index));
    const cited = byNumber.get(Number(match[1]));
    if (cited) {
      box.append(
        el(
          "button",
          {
            type: "button",
            class: "cite",
            title: `${cited.source}: open the passage`,
            "aria-controls": citationId(cited.number),
            onclick: () => openCitation(cited.number),
          },
          `[${cited.number}]`,
        ),
      );
    } else box.append(match[0]);
    last = match.index + match[0].length;
  }
  box.append(text.slice(last));
  return box;
}

function citation(c) {
  return el(
    "details",
    { class: "citation", id: citationId(c.number), dataset: { source: c.source } },
    el(
      "summary",
      null,
      el("strong", null, `[${c.number}] ${c.source}`),
      el(
        "span",
        { class: "hint" },
        ` chunk ${c.chunk} · characters ${fmtInt(c.start)}–${fmtInt(c.end)} · score ${c.score.toFixed(3)}`,
        c.inferred ? " · matched by outcrop (the model cited no source)" : "",
      ),
    ),
    el("div", { class: "passage" }, c.text),
  );
}

function retrieved(sources) {
  if (!sources.length) return null;
  return el(
    "details",
    { class: "retrieved" },
    el("summary", null, `Passages retrieved (${sources.length})`),
    sources.map((hit, i) => searchHit(hit, i + 1)),
  );
}

function showAnswer(a) {
  const box = $("answer");
  const parts = [answerText(a.answer, a.citations)];
  if (!a.found) {
    parts.push(
      el(
        "p",
        { class: "hint" },
        "Nothing in the knowledge base matched the question closely enough to answer from.",
      ),
    );
  } else if (a.citations.length) {
    parts.push(
      el("h3", null, "Sources"),
      el("div", { class: "citations" }, a.citations.map(citation)),
    );
  } else {
    parts.push(el("p", { class: "hint" }, "The answer cites no source."));
  }
  parts.push(retrieved(a.sources));
  if (a.trace_id) {
    parts.push(
      el(
        "div",
        { class: "meta" },
        el("a", { href: traceHref(a.trace_id), class: "trace-link" }, "trace"),
        feedbackForm(a.trace_id),
      ),
    );
  }
  box.replaceChildren(el("article", { class: "kb-answer", dataset: { found: String(a.found) } }, parts));
}

async function ask(event) {
  event.preventDefault();
  const box = $("answer");
  const question = $("question").value.trim();
  if (!question) {
    showError(box, "Write a question first.");
    return;
  }
  const k = Number($("ask-k").value);
  if (!Number.isInteger(k) || k < 1 || k > 50) {
    showError(box, "Passages must be a whole number from 1 to 50.");
    return;
  }
  const body = { question, k };
  if ($("ask-model").value) body.model = $("ask-model").value;
  $("ask").disabled = true;
  box.replaceChildren(
    el("p", { class: "hint", role: "status" }, "Reading the documents and writing an answer…"),
  );
  try {
    showAnswer(await api(kbPath(current, "/ask"), { method: "POST", body }));
  } catch (err) {
    showError(box, `No answer: ${err.message}`);
  } finally {
    $("ask").disabled = false;
  }
}

// -- searching ----------------------------------------------------------------------------

function stages(scores) {
  return Object.entries(scores)
    .filter(([name]) => !name.endsWith("_rank"))
    .map(([name, value]) => {
      const rank = scores[`${name}_rank`];
      return el(
        "span",
        { class: "stage", dataset: { stage: name } },
        `${name} ${value.toFixed(3)}`,
        rank ? el("span", { class: "hint" }, ` #${rank}`) : "",
      );
    });
}

function searchHit(hit, n) {
  const where = [hit.source, ...hit.heading_path].join(" › ");
  return el(
    "article",
    { class: "hit", dataset: { source: hit.source } },
    el(
      "header",
      null,
      el("strong", null, `${n}. ${where}`),
      el("span", { class: "score" }, `score ${hit.score.toFixed(3)}`),
    ),
    el("div", { class: "stages" }, stages(hit.scores)),
    el(
      "div",
      { class: "hint" },
      `chunk ${hit.chunk} · characters ${fmtInt(hit.start)}–${fmtInt(hit.end)}`,
    ),
    el("div", { class: "passage" }, hit.text),
  );
}

async function search(event) {
  event.preventDefault();
  const box = $("results");
  const query = $("query").value.trim();
  if (!query) {
    showError(box, "Write what to search for first.");
    return;
  }
  const k = Number($("search-k").value);
  if (!Number.isInteger(k) || k < 1 || k > 100) {
    showError(box, "Results must be a whole number from 1 to 100.");
    return;
  }
  $("search").disabled = true;
  try {
    const body = await api(kbPath(current, "/search"), {
      method: "POST",
      body: { query, k, mode: $("mode").value },
    });
    box.replaceChildren(
      body.data.length
        ? el("div", { class: "hits" }, body.data.map((hit, i) => searchHit(hit, i + 1)))
        : el("p", { class: "hint" }, "Nothing found."),
    );
  } catch (err) {
    showError(box, `The search failed: ${err.message}`);
  } finally {
    $("search").disabled = false;
  }
}

// -- start --------------------------------------------------------------------------------

$("create-form").addEventListener("submit", create);
$("ask-form").addEventListener("submit", ask);
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});
$("search-form").addEventListener("submit", search);
setUpDrop();

header("knowledge", async () => {
  await Promise.all([loadList(), loadModels()]);
  await refresh();
});
current = new URLSearchParams(location.search).get("kb");
loadModels();
loadList().then(() => {
  markCurrent();
  refresh();
});
