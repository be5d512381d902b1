// The playground: streamed chat with one to three models side by side, parameters, the
// prompt builder (rendered live by POST /v1/prompts/render), feedback and trace links.

import {
  ApiError,
  api,
  el,
  events,
  feedbackForm,
  fmtCost,
  fmtInt,
  fmtMs,
  header,
  request,
  showError,
  traceHref,
} from "./common.js";

const MAX_COLUMNS = 3;
const RENDER_DELAY_MS = 250;

const $ = (id) => document.getElementById(id);
const banner = $("banner");
const columnsBox = $("columns");
const columns = [];
// Models that cannot chat (embedders, image models), where the server does not say a kind.
const NOT_CHAT = /embed|minilm|dall-e|image|diffusion|rerank|whisper|tts/i;
let models = [];
let defaultModel = null;
let modelsError = null;
let running = null; // the AbortController of the exchange in flight

// -- models -----------------------------------------------------------------------------

async function loadModels() {
  try {
    const body = await api("/v1/models");
    const chat = body.data.filter((m) => (m.kind ? m.kind === "chat" : !NOT_CHAT.test(m.id)));
    models = chat.map((m) => m.id);
    defaultModel = chat.find((m) => m.default)?.id ?? null;
    modelsError = null;
    banner.replaceChildren();
    if (!models.length) showError(banner, "This server serves no chat models.");
  } catch (err) {
    models = [];
    modelsError = err.message;
    showError(banner, `Could not list the models: ${err.message}`);
  }
  for (const column of columns) column.fillModels();
  fillVersionModels();
  scheduleRender();
}

// -- one column: a model and its conversation --------------------------------------------

class Column {
  constructor(model) {
    this.history = [];
    this.select = el("select", { class: "model", "aria-label": "Model" });
    this.select.addEventListener("change", () => {
      if (this === columns[0]) scheduleRender(); // token counts depend on the model
    });
    this.remove = el(
      "button",
      { type: "button", class: "remove small", title: "Remove this model" },
      "Remove",
    );
    this.remove.addEventListener("click", () => removeColumn(this));
    this.log = el("div", { class: "log", "aria-live": "polite" });
    this.node = el(
      "section",
      { class: "column" },
      el("div", { class: "column-head" }, this.select, this.remove),
      this.log,
    );
    this.fillModels(model);
  }

  get model() {
    return this.select.value;
  }

  fillModels(preferred) {
    const keep = preferred || this.select.value || (this === columns[0] ? defaultModel : null);
    if (!models.length) {
      const why = modelsError ? "no models (see the message above)" : "no models";
      this.select.replaceChildren(el("option", { value: "" }, why));
      return;
    }
    this.select.replaceChildren(...models.map((id) => el("option", { value: id }, id)));
    if (keep && models.includes(keep)) this.select.value = keep;
  }

  clear() {
    this.history = [];
    this.log.replaceChildren();
  }

  show(message) {
    const role = message.role;
    this.log.append(
      el(
        "article",
        { class: `msg ${role}` },
        el("header", null, el("span", { class: "who" }, role)),
        el("div", { class: "content" }, message.content),
      ),
    );
  }

  async ask(turns, params, signal) {
    const answer = new Answer(this.model || "(no model)");
    const before = this.history.length;
    for (const turn of turns) {
      this.history.push(turn);
      this.show(turn);
    }
    this.log.append(answer.node);
    if (!this.model) {
      answer.failed("Choose a model first.");
      this.history.splice(before);
      return;
    }
    const body = {
      model: this.model,
      messages: this.history,
      stream: true,
      stream_options: { include_usage: true },
      ...params,
    };
    const t0 = performance.now();
    try {
      await streamAnswer(answer, body, signal, t0);
      answer.done(performance.now() - t0);
    } catch (err) {
      if (err.name === "AbortError") {
        answer.stopped(performance.now() - t0);
      } else {
        answer.failed(err.message, err.status);
        // Not answered: the next message is sent without these turns (they stay on screen).
        if (!answer.text) this.history.splice(before);
      }
    }
    if (answer.text) this.history.push({ role: "assistant", content: answer.text });
  }
}

// -- one streamed answer ------------------------------------------------------------------

/** POST a chat completion with `stream: true` and show it in `answer` as it arrives. */
async function streamAnswer(answer, body, signal, t0) {
  const response = await request("/v1/chat/completions", { method: "POST", body, signal });
  answer.trace(response.headers.get("x-outcrop-trace-id"));
  for await (const data of events(response)) {
    if (data.error) {
      throw new ApiError(data.error.message || "The stream failed.", 0, data.error.code);
    }
    if (typeof data.id === "string" && data.id.startsWith("chatcmpl-")) {
      answer.trace(data.id.slice("chatcmpl-".length));
    }
    for (const choice of data.choices || []) {
      const delta = choice.delta || {};
      if (delta.content) answer.append(delta.content, performance.now() - t0);
      if (delta.tool_calls) answer.toolCalls(delta.tool_calls);
      if (choice.finish_reason) answer.finishReason = choice.finish_reason;
    }
    if (data.usage) answer.usage = data.usage;
  }
}

class Answer {
  constructor(model) {
    this.text = "";
    this.traceId = null;
    this.ttft = null;
    this.usage = null;
    this.finishReason = null;
    this.calls = [];
    this.content = el("div", { class: "content" });
    this.tools = el("div", { class: "tools" });
    this.meta = el("footer", { class: "meta" });
    this.node = el(
      "article",
      { class: "msg assistant answer", dataset: { state: "streaming" } },
      el("header", null, el("span", { class: "who" }, model)),
      this.content,
      this.tools,
      this.meta,
    );
  }

  trace(id) {
    if (id && !this.traceId) {
      this.traceId = id;
      this.node.dataset.traceId = id;
    }
  }

  append(text, elapsed) {
    if (this.ttft === null) this.ttft = elapsed;
    this.text += text;
    this.content.textContent = this.text;
  }

  toolCalls(deltas) {
    for (const delta of deltas) {
      const index = delta.index ?? this.calls.length;
      const call = (this.calls[index] ||= { name: "", arguments: "" });
      if (delta.function?.name) call.name += delta.function.name;
      if (delta.function?.arguments) call.arguments += delta.function.arguments;
    }
    this.tools.replaceChildren(
      ...this.calls.map((c) =>
        el("div", { class: "tool-call" }, el("code", null, c.name), " ", c.arguments),
      ),
    );
  }

  finish(state, elapsed, extra) {
    this.node.dataset.state = state;
    const parts = [];
    if (this.usage) {
      parts.push(
        `${fmtInt(this.usage.prompt_tokens)} in · ${fmtInt(this.usage.completion_tokens)} out`,
      );
    }
    if (elapsed !== undefined) parts.push(`${fmtMs(elapsed)} total`);
    if (this.ttft !== null) parts.push(`${fmtMs(this.ttft)} to first token`);
    if (this.finishReason && this.finishReason !== "stop") {
      parts.push(`finished: ${this.finishReason}`);
    }
    const items = [el("span", null, parts.join(" · "))];
    if (this.traceId) {
      items.push(el("a", { class: "trace-link", href: traceHref(this.traceId) }, "Trace →"));
    }
    this.meta.replaceChildren(...items);
    if (extra) this.node.append(extra);
    if (this.traceId && state !== "error") this.node.append(feedbackForm(this.traceId, null));
  }

  done(elapsed) {
    if (!this.text && !this.calls.length) this.content.textContent = "(empty answer)";
    this.finish("done", elapsed);
  }

  stopped(elapsed) {
    this.finish("stopped", elapsed, el("div", { class: "note" }, "Stopped."));
  }

  failed(message, status) {
    const prefix = status ? `Error ${status}: ` : "Error: ";
    this.finish("error", undefined, el("div", { class: "error", role: "alert" }, prefix + message));
  }
}

// -- columns ------------------------------------------------------------------------------

function addColumn(model) {
  if (columns.length >= MAX_COLUMNS) return;
  const column = new Column(model || models.find((m) => !columns.some((c) => c.model === m)));
  columns.push(column);
  columnsBox.append(column.node);
  updateColumns();
}

function removeColumn(column) {
  if (columns.length <= 1) return;
  columns.splice(columns.indexOf(column), 1);
  column.node.remove();
  updateColumns();
  scheduleRender();
}

function updateColumns() {
  columnsBox.dataset.count = String(columns.length);
  for (const column of columns) column.remove.hidden = columns.length === 1;
  const add = $("add-column");
  add.disabled = columns.length >= MAX_COLUMNS;
  add.title = add.disabled ? `At most ${MAX_COLUMNS} models side by side` : "";
}

// -- sending ------------------------------------------------------------------------------

function params() {
  const out = {};
  const problems = [];
  for (const [id, name, label, integer] of [
    ["temperature", "temperature", "Temperature", false],
    ["max-tokens", "max_tokens", "Max tokens", true],
    ["seed", "seed", "Seed", true],
  ]) {
    const input = $(id);
    if (input.value.trim() === "") {
      if (input.validity.badInput) problems.push(`${label} is not a number.`);
      continue;
    }
    const value = Number(input.value);
    if (!input.checkValidity() || (integer && !Number.isInteger(value))) {
      const range = [input.min && `at least ${input.min}`, input.max && `at most ${input.max}`]
        .filter(Boolean)
        .join(" and ");
      const kind = integer ? "a whole number" : "a number";
      problems.push(`${label} must be ${kind}${range ? " " + range : ""}.`);
      continue;
    }
    out[name] = value;
  }
  return { params: out, problems };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("p-send").disabled = busy;
  $("stop").disabled = !busy;
}

/** The parameters, or null (and the problems shown) when one is out of range. */
function checkedParams() {
  const { params: chosen, problems } = params();
  if (problems.length) {
    showError(banner, problems.join(" "));
    return null;
  }
  return chosen;
}

async function exchange(turns, fresh, chosen) {
  if (modelsError) showError(banner, `Could not list the models: ${modelsError}`);
  else banner.replaceChildren();
  running = new AbortController();
  setBusy(true);
  try {
    await Promise.all(
      columns.map((column) => {
        if (fresh) column.clear();
        return column.ask(
          turns.map((t) => ({ ...t })),
          chosen,
          running.signal,
        );
      }),
    );
  } finally {
    running = null;
    setBusy(false);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const box = $("message");
  const text = box.value;
  if (running) return;
  if (!text.trim()) {
    showError(banner, "Write a message first.");
    return;
  }
  const chosen = checkedParams();
  if (!chosen) return; // the message stays in the box
  box.value = "";
  exchange([{ role: "user", content: text }], false, chosen);
});

$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", () => running?.abort());
$("new-chat").addEventListener("click", () => {
  if (!running) for (const column of columns) column.clear();
});
$("add-column").addEventListener("click", () => addColumn());

// -- the prompt builder -----------------------------------------------------------------

const TEXT_FIELDS = ["query", "instructions", "objective", "persona", "context", "tone", "system"];
let renderTimer = null;
let renderController = null;
let renderSeq = 0;

function addExample(input = "", output = "") {
  const inputBox = el("textarea", { rows: "1", class: "ex-input", placeholder: "Input" });
  const outputBox = el("textarea", { rows: "1", class: "ex-output", placeholder: "Output" });
  inputBox.value = input;
  outputBox.value = output;
  const row = el(
    "div",
    { class: "example" },
    el("label", null, "Input", inputBox),
    el("label", null, "Output", outputBox),
  );
  const remove = el("button", { type: "button", class: "small remove" }, "Remove");
  remove.addEventListener("click", () => {
    row.remove();
    scheduleRender();
  });
  row.append(remove);
  $("p-examples").append(row);
  return row;
}

/** The prompt and variables the builder holds, or a problem to show. */
function builtPrompt() {
  const prompt = {};
  for (const name of TEXT_FIELDS) {
    const value = $(`p-${name}`).value;
    if (value.trim()) prompt[name] = value;
  }
  const constraints = $("p-constraints")
    .value.split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  if (constraints.length) prompt.constraints = constraints;
  const examples = [];
  for (const row of $("p-examples").querySelectorAll(".example")) {
    const input = row.querySelector(".ex-input").value;
    const output = row.querySelector(".ex-output").value;
    if (input.trim() || output.trim()) examples.push({ input, output });
  }
  if (examples.length) prompt.examples = examples;
  const variables = {};
  const lines = $("p-variables").value.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at <= 0) {
      return { problem: `Variables, line ${i + 1}: write NAME=value (got "${line}").` };
    }
    variables[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return { prompt, variables };
}

function renderStatus(message, kind) {
  const box = $("p-status");
  box.className = kind || "";
  box.textContent = message;
}

function scheduleRender() {
  clearTimeout(renderTimer);
  renderTimer = setTimeout(renderPrompt, RENDER_DELAY_MS);
}

/** Ask the server how the prompt reads; resolves to the messages, or null. */
async function renderPrompt() {
  clearTimeout(renderTimer);
  renderController?.abort();
  const seq = ++renderSeq;
  const rendered = $("p-rendered");
  const tokens = $("p-tokens");
  const built = builtPrompt();
  if (built.problem) {
    renderStatus(built.problem, "error");
    rendered.classList.add("stale");
    return null;
  }
  if (!built.prompt.query) {
    renderStatus("Write a query to see the rendered prompt.", "hint");
    rendered.textContent = "";
    tokens.textContent = "";
    return null;
  }
  renderController = new AbortController();
  renderStatus("Rendering…", "hint");
  try {
    const body = { prompt: built.prompt, variables: built.variables };
    if (columns[0]?.model) body.model = columns[0].model;
    const data = await api("/v1/prompts/render", {
      method: "POST",
      body,
      signal: renderController.signal,
    });
    if (seq !== renderSeq) return null;
    rendered.classList.remove("stale");
    rendered.textContent =
      data.text ?? data.messages.map((m) => `[${m.role}]\n${m.content}`).join("\n\n");
    tokens.textContent = `${fmtInt(data.tokens)} tokens${data.estimated ? " (estimated)" : ""}`;
    tokens.dataset.tokens = String(data.tokens);
    renderStatus("", "");
    return data.messages;
  } catch (err) {
    if (err.name === "AbortError" || seq !== renderSeq) return null;
    rendered.classList.add("stale");
    renderStatus(err.message, "error");
    return null;
  }
}

$("builder").addEventListener("input", scheduleRender);
$("p-add-example").addEventListener("click", () => {
  addExample().querySelector("textarea").focus();
  scheduleRender();
});
$("p-send").addEventListener("click", async () => {
  if (running) return;
  const chosen = checkedParams();
  if (!chosen) return;
  const messages = await renderPrompt();
  if (messages && !running) exchange(messages, true, chosen);
  else if (!$("p-status").textContent) renderStatus("Write a query first.", "error");
});

// -- prompt versions side by side ---------------------------------------------------------

const MAX_VERSIONS = 3;
let storedPrompt = null; // GET /v1/prompts/{name}/versions of the chosen prompt
let versionsRunning = null;
let promptsSeq = 0;

function versionsStatus(message) {
  if (message) showError($("pv-status"), message);
  else $("pv-status").replaceChildren();
}

async function loadPrompts() {
  const select = $("pv-prompt");
  const chosen = select.value;
  const note = $("pv-prompt-note");
  try {
    const body = await api("/v1/prompts");
    select.replaceChildren(
      el("option", { value: "" }, body.data.length ? "choose a prompt" : "no stored prompts"),
      ...body.data.map((p) =>
        el("option", { value: p.name }, `${p.name} (${p.versions.length} versions)`),
      ),
    );
    note.textContent = body.problems.length
      ? `Some prompt files could not be read: ${body.problems.join(" ")}`
      : body.data.length
        ? ""
        : "No prompts yet: write one in prompts/NAME.toml of the project (see docs/prompts.md).";
    if (chosen && body.data.some((p) => p.name === chosen)) select.value = chosen;
    else if (body.data.length === 1) select.value = body.data[0].name;
    if (select.value) await choosePrompt(select.value);
  } catch (err) {
    select.replaceChildren(el("option", { value: "" }, "no prompts (see the message)"));
    note.textContent = "";
    versionsStatus(`Could not list the stored prompts: ${err.message}`);
  }
}

/** The version a reference (name@3, name@label) points at, or null. */
function versionOf(ref) {
  if (!storedPrompt) return null;
  const selector = ref.slice(ref.indexOf("@") + 1);
  const number = /^\d+$/.test(selector) ? Number(selector) : storedPrompt.labels[selector];
  return storedPrompt.versions.find((v) => v.version === number) || null;
}

async function choosePrompt(name) {
  const mine = ++promptsSeq;
  storedPrompt = null;
  $("pv-picks").replaceChildren();
  $("pv-vars").replaceChildren();
  if (!name) return;
  try {
    const body = await api(`/v1/prompts/${encodeURIComponent(name)}/versions`);
    if (mine !== promptsSeq) return;
    storedPrompt = body;
    versionsStatus("");
    const newest = body.versions.map((v) => v.ref).reverse();
    addPick(newest[1] || newest[0]);
    addPick(newest[0]);
  } catch (err) {
    if (mine !== promptsSeq) return;
    versionsStatus(err.message);
  }
}

function addPick(ref) {
  const box = $("pv-picks");
  if (!storedPrompt || box.children.length >= MAX_VERSIONS) return;
  const select = el("select", { class: "pv-version", "aria-label": "Version or label" });
  const name = storedPrompt.name;
  select.replaceChildren(
    ...storedPrompt.versions
      .slice()
      .reverse()
      .map((v) => {
        const labels = v.labels.length ? ` (${v.labels.join(", ")})` : "";
        const note = v.note ? ` · ${v.note}` : "";
        return el("option", { value: v.ref }, `version ${v.version}${labels}${note}`);
      }),
    ...Object.entries(storedPrompt.labels).map(([label, version]) =>
      el("option", { value: `${name}@${label}` }, `label ${label} → version ${version}`),
    ),
  );
  if (ref) select.value = ref;
  select.addEventListener("change", showVariables);
  const remove = el("button", { type: "button", class: "small remove" }, "Remove");
  const row = el("div", { class: "pv-pick" }, select, remove);
  remove.addEventListener("click", () => {
    row.remove();
    updatePicks();
  });
  box.append(row);
  updatePicks();
}

function picks() {
  return [...document.querySelectorAll("#pv-picks select.pv-version")].map((s) => s.value);
}

function updatePicks() {
  const rows = $("pv-picks").children;
  for (const row of rows) row.querySelector(".remove").hidden = rows.length <= 2;
  $("pv-add").disabled = !storedPrompt || rows.length >= MAX_VERSIONS;
  showVariables();
}

/** An input for every variable the chosen versions use; typed values are kept. */
function showVariables() {
  const box = $("pv-vars");
  const typed = Object.fromEntries(
    [...box.querySelectorAll("input")].map((i) => [i.dataset.name, i.value]),
  );
  const needed = new Map(); // name → default, if every version that uses it has one
  for (const ref of picks()) {
    const version = versionOf(ref);
    if (!version) continue;
    for (const name of version.variables) {
      const fallback = version.defaults[name];
      if (!needed.has(name)) needed.set(name, fallback ?? null);
      else if (fallback === undefined) needed.set(name, null);
    }
  }
  if (!needed.size) {
    box.replaceChildren(el("p", { class: "hint" }, "These versions use no variables."));
    return;
  }
  box.replaceChildren(
    ...[...needed].map(([name, fallback]) => {
      const input = el("input", {
        type: "text",
        id: `pv-var-${name}`,
        dataset: { name },
        placeholder: fallback === null ? "required" : `default: ${fallback}`,
      });
      input.value = typed[name] ?? "";
      return el("label", { for: `pv-var-${name}` }, name, input);
    }),
  );
}

/** The variables a version uses that were filled in, or a problem to show. */
function variablesFor(version) {
  const values = {};
  for (const name of version.variables) {
    const input = document.querySelector(`#pv-vars input[data-name="${CSS.escape(name)}"]`);
    const value = input ? input.value : "";
    if (value !== "") values[name] = value;
    else if (version.defaults[name] === undefined) {
      return { problem: `Fill in the variable "${name}" (${version.ref} uses it).` };
    }
  }
  return { values };
}

class VersionColumn {
  constructor(ref, version, model) {
    this.ref = ref;
    this.version = version;
    const title = ref === version.ref ? ref : `${ref} → version ${version.version}`;
    this.rendered = el("pre", { class: "pv-rendered", "aria-label": "Rendered prompt" });
    this.tokens = el("span", { class: "tokens" });
    this.answer = new Answer(model);
    this.node = el(
      "section",
      { class: "column pv-column", dataset: { ref, version: String(version.version) } },
      el("div", { class: "column-head" }, el("strong", null, title)),
      el(
        "details",
        { class: "pv-prompt-text", open: true },
        el("summary", null, "Rendered prompt ", this.tokens),
        this.rendered,
      ),
      this.answer.node,
    );
  }

  async run(model, values, chosen, signal) {
    const answer = this.answer;
    try {
      const shown = await api("/v1/prompts/render", {
        method: "POST",
        body: { prompt: this.version.prompt, variables: values, model },
        signal,
      });
      this.rendered.textContent =
        shown.text ?? shown.messages.map((m) => `[${m.role}]\n${m.content}`).join("\n\n");
      const estimated = shown.estimated ? " (estimated)" : "";
      this.tokens.textContent = `${fmtInt(shown.tokens)} tokens${estimated}`;
    } catch (err) {
      if (err.name === "AbortError") return answer.stopped();
      return answer.failed(err.message, err.status);
    }
    const body = {
      model,
      messages: [],
      stream: true,
      stream_options: { include_usage: true },
      outcrop: { prompt: this.ref, variables: values },
      ...chosen,
    };
    const t0 = performance.now();
    try {
      await streamAnswer(answer, body, signal, t0);
      answer.done(performance.now() - t0);
    } catch (err) {
      if (err.name === "AbortError") answer.stopped(performance.now() - t0);
      else answer.failed(err.message, err.status);
      return;
    }
    if (!answer.traceId) return;
    try {
      const found = await api(`/v1/traces/${encodeURIComponent(answer.traceId)}`);
      const cost = el("span", { class: "cost" }, `cost ${fmtCost(found.trace.cost_usd)}`);
      answer.meta.insertBefore(cost, answer.meta.querySelector(".trace-link"));
    } catch {
      // The answer and its trace link are shown; the cost is a detail.
    }
  }
}

async function runVersions() {
  if (versionsRunning) return;
  versionsStatus("");
  if (!storedPrompt) {
    versionsStatus("Choose a stored prompt first.");
    return;
  }
  const refs = picks();
  const versions = refs.map(versionOf);
  if (refs.length < 2) {
    versionsStatus("Pick two or three versions to compare.");
    return;
  }
  const numbers = versions.map((v) => v && v.version);
  const twice = numbers.find((n, i) => numbers.indexOf(n) !== i);
  if (twice !== undefined) {
    versionsStatus(
      `Two of the picks are version ${twice} (a label points at it): pick different versions.`,
    );
    return;
  }
  const model = $("pv-model").value;
  if (!model) {
    versionsStatus("Choose a model first.");
    return;
  }
  const values = [];
  for (const version of versions) {
    const got = variablesFor(version);
    if (got.problem) {
      versionsStatus(got.problem);
      return;
    }
    values.push(got.values);
  }
  const { params: chosen, problems } = params();
  if (problems.length) {
    versionsStatus(problems.join(" "));
    return;
  }
  const columnsNow = refs.map((ref, i) => new VersionColumn(ref, versions[i], model));
  const box = $("pv-results");
  box.dataset.count = String(columnsNow.length);
  box.replaceChildren(...columnsNow.map((c) => c.node));
  versionsRunning = new AbortController();
  $("pv-run").disabled = true;
  $("pv-stop").disabled = false;
  try {
    await Promise.all(
      columnsNow.map((c, i) => c.run(model, values[i], chosen, versionsRunning.signal)),
    );
  } finally {
    versionsRunning = null;
    $("pv-run").disabled = false;
    $("pv-stop").disabled = true;
  }
}

$("pv-prompt").addEventListener("change", (event) => choosePrompt(event.target.value));
$("pv-add").addEventListener("click", () => addPick(picks().at(-1)));
$("pv-run").addEventListener("click", runVersions);
$("pv-stop").addEventListener("click", () => versionsRunning?.abort());

function fillVersionModels() {
  const select = $("pv-model");
  const keep = select.value || defaultModel;
  if (!models.length) {
    select.replaceChildren(el("option", { value: "" }, "no models"));
    return;
  }
  select.replaceChildren(...models.map((id) => el("option", { value: id }, id)));
  if (keep && models.includes(keep)) select.value = keep;
}

// -- start --------------------------------------------------------------------------------

header("playground", () => {
  loadModels();
  loadPrompts();
});
addColumn();
setBusy(false);
updatePicks();
loadModels();
loadPrompts();
