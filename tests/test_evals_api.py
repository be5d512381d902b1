"""The evals and prompts API behind the Evals page and the playground's prompt versions: runs,
the matrix, a cell's cases, comparisons, the report; stored prompts; and the chat extension
``outcrop: {prompt, variables}`` that sends a stored prompt version, traced as one.

Runs are made for real by the eval runner on test-double models; the API's matrix must be
``summarize``'s and its comparison ``compare_runs``'s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.evals.runner import EvalRun, Runner, load_run
from outcrop.evals.suite import Suite
from outcrop.evals.summary import compare_runs, summarize
from outcrop.prompts import Prompt, PromptRegistry
from outcrop.providers.base import ModelInfo
from outcrop.providers.testing import FunctionModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import create_key
from outcrop.types import ChatRequest

from .serving import LiveServer

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Peru": "Lima",
    "Chad": "N'Djamena",
    "Kenya": "Nairobi",
    "Chile": "Santiago",
    "Spain": "Madrid",
}


class Geography(FunctionModel):
    """Knows the capitals (``good``) or not (``bad``), under its own provider name."""

    def __init__(self, provider: str, knows: bool):
        super().__init__(self._answer)
        self.provider = provider
        self.knows = knows

    def _answer(self, request: ChatRequest) -> str:
        text = request.messages[-1].text
        country = next((c for c in CAPITALS if c in text), None)
        if not self.knows or country is None:
            return "I am not sure."
        return f"The capital of {country} is {CAPITALS[country]}."

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"{self.provider}:m", provider=self.provider)]


def geography_gateway(store: Store) -> Gateway:
    return Gateway(
        settings=Settings(default_model="good:m"),
        store=store,
        providers={"good": Geography("good", True), "bad": Geography("bad", False)},
        sleep=lambda s: None,
    )


def capitals_suite(models: list[str], name: str = "capitals") -> Suite:
    return Suite.model_validate(
        {
            "name": name,
            "prompts": ["capital@1", "capital@2"],
            "models": models,
            "cases": [{"vars": {"country": c}, "expected": p} for c, p in CAPITALS.items()],
            "metrics": ["contains", {"name": "token_f1", "threshold": 0.2}, "latency_ms"],
        }
    )


@dataclass
class Runs:
    good: EvalRun  # capitals: two prompt versions on the model that knows
    bad: EvalRun  # capitals: the same on the model that does not
    other: EvalRun  # another suite


def store_prompts(store: Store) -> None:
    """Two versions of ``capital`` (production → 1) and one of ``greet``."""
    registry = PromptRegistry(store)
    registry.record(Prompt(name="capital", query="What is the capital of {{ country }}?"))
    registry.record(
        Prompt(
            name="capital",
            persona="a geography teacher",
            query="Name the capital city of {{ country }}.",
            options={"temperature": 0.1},
        )
    )
    registry.promote("capital", 1, "production")
    registry.record(
        Prompt(
            name="greet",
            query="Say hello to {{ who }} in {{ language }}.",
            variables={"language": {"default": "English"}},
        )
    )


def make_runs(gw: Gateway) -> Runs:
    """Real runs through the runner, oldest first: good, bad, other."""
    store_prompts(gw.store)
    good = Runner(capitals_suite(["good:m"]), gateway=gw).run()
    bad = Runner(capitals_suite(["bad:m"]), gateway=gw).run()
    other = Runner(capitals_suite(["good:m"], name="capitals-hard"), gateway=gw).run()
    return Runs(good, bad, other)


@pytest.fixture
def gw(store: Store) -> Gateway:
    return geography_gateway(store)


@pytest.fixture
def live(gw: Gateway) -> Iterator[LiveServer]:
    server = LiveServer(create_app(gw)).start()
    yield server
    server.stop()


@pytest.fixture
def runs(gw: Gateway) -> Runs:
    return make_runs(gw)


def get(live: LiveServer, path: str, **params: str | int | float) -> httpx.Response:
    return httpx.get(live.url + path, params=params, timeout=30)


def error_of(response: httpx.Response) -> dict[str, str | None]:
    body: dict[str, dict[str, str | None]] = response.json()
    return body["error"]


# -- runs, the matrix, cases --------------------------------------------------------------


def test_runs_list_newest_first_with_headline_means(
    live: LiveServer, runs: Runs, gw: Gateway
) -> None:
    body = get(live, "/v1/evals/runs").json()
    assert [r["id"] for r in body["data"]] == [runs.other.id, runs.bad.id, runs.good.id]
    good = body["data"][2]
    assert good["suite"] == "capitals" and good["status"] == "done"
    assert (good["total"], good["done"], good["errors"], good["cases"]) == (16, 16, 0, 8)
    assert good["prompts"] == ["capital@1", "capital@2"] and good["models"] == ["good:m"]
    headline = {h["metric"]: h for h in good["headline"]}
    assert set(headline) == {"contains", "token_f1", "latency_ms"}
    assert headline["contains"]["mean"] == 1.0 and headline["contains"]["n"] == 16
    assert headline["latency_ms"]["higher_is_better"] is False
    bad = {h["metric"]: h for h in body["data"][1]["headline"]}
    assert bad["contains"]["mean"] == 0.0

    only = get(live, "/v1/evals/runs", suite="capitals-hard", limit=5).json()["data"]
    assert [r["id"] for r in only] == [runs.other.id]
    assert [r["id"] for r in get(live, "/v1/evals/runs", limit=1).json()["data"]] == [runs.other.id]


def test_the_matrix_is_summarize_of_the_run(live: LiveServer, runs: Runs, gw: Gateway) -> None:
    for run in (runs.good, runs.bad):
        body = get(live, f"/v1/evals/runs/{run.id[:8]}").json()  # a prefix names the run
        assert body["id"] == run.id
        assert body["cells"] == [c.to_dict() for c in summarize(load_run(gw, run.id))]
        assert body["metrics"] == [
            {"name": "contains", "higher_is_better": True, "threshold": None},
            {"name": "token_f1", "higher_is_better": True, "threshold": 0.2},
            {"name": "latency_ms", "higher_is_better": False, "threshold": None},
        ]
        assert body["unreadable"] == []
    good = get(live, f"/v1/evals/runs/{runs.good.id}").json()
    cell = good["cells"][0]
    assert cell["cell"] == "capital@1 × good:m" and cell["errors"] == 0
    assert cell["metrics"]["token_f1"]["passed"] is True
    bad = get(live, f"/v1/evals/runs/{runs.bad.id}").json()
    assert bad["cells"][0]["metrics"]["token_f1"]["passed"] is False


def test_a_cells_cases_with_inputs_outputs_scores_and_traces(
    live: LiveServer, runs: Runs, store: Store
) -> None:
    body = get(live, f"/v1/evals/runs/{runs.good.id}/results", cell="capital@2 × good:m").json()
    assert body["run"] == runs.good.id and body["total"] == 8 and len(body["data"]) == 8
    first = body["data"][0]
    assert first["cell"] == "capital@2 × good:m" and first["status"] == "ok"
    country = next(c for c in CAPITALS if c in first["input"])
    assert first["input"] == f"Name the capital city of {country}."
    assert first["output"] == f"The capital of {country} is {CAPITALS[country]}."
    assert first["expected"] == [CAPITALS[country]]
    assert first["scores"]["contains"] == 1.0
    trace = store.get(first["trace_id"])
    assert trace is not None and (trace.prompt_name, trace.prompt_version) == ("capital", 2)
    # Every answer of the run, paged.
    everything = get(live, f"/v1/evals/runs/{runs.good.id}/results", limit=5, offset=5).json()
    assert everything["total"] == 16 and len(everything["data"]) == 5
    failed = get(live, f"/v1/evals/runs/{runs.good.id}/results", status="error").json()
    assert failed["total"] == 0


# -- comparisons --------------------------------------------------------------------------


def test_compare_is_compare_runs(live: LiveServer, runs: Runs, gw: Gateway) -> None:
    body = get(live, "/v1/evals/compare", base=runs.good.id, head=runs.bad.id[:8]).json()
    expected = compare_runs(load_run(gw, runs.good.id), load_run(gw, runs.bad.id))
    assert body["comparisons"] == expected.to_dict()["comparisons"]
    assert (body["base"]["id"], body["head"]["id"]) == (runs.good.id, runs.bad.id)
    assert body["base"]["label"] == runs.good.id[:8] and body["alpha"] == 0.05
    verdicts = {(c["cell"], c["metric"]): c["verdict"] for c in body["comparisons"]}
    assert verdicts[("capital@1 × good:m → capital@1 × bad:m", "contains")] == "regressed"
    assert verdicts[("capital@2 × good:m → capital@2 × bad:m", "token_f1")] == "regressed"

    # Two cells of one run: version 2 against version 1.
    cells = get(
        live,
        "/v1/evals/compare",
        base=runs.good.id,
        head=runs.good.id,
        base_prompt="capital@1",
        head_prompt="capital@2",
        alpha=0.1,
    ).json()
    same = compare_runs(
        load_run(gw, runs.good.id),
        load_run(gw, runs.good.id),
        a_prompt="capital@1",
        b_prompt="capital@2",
        alpha=0.1,
    )
    assert cells["comparisons"] == same.to_dict()["comparisons"]
    assert cells["head"]["prompt"] == "capital@2"


# -- the report ---------------------------------------------------------------------------


def test_the_report_is_served_with_a_policy_that_runs_its_own_script_only(
    live: LiveServer, runs: Runs
) -> None:
    page = get(live, f"/v1/evals/runs/{runs.good.id[:8]}/report")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>capitals · eval run" in page.text
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"
    assert policy["default-src"] == "'none'" and policy["sandbox"] == "allow-scripts"
    assert policy["style-src"] == "'unsafe-inline'"
    assert page.headers["x-content-type-options"] == "nosniff"


# -- bad input ----------------------------------------------------------------------------


def test_unknown_runs_are_404s_that_name_the_close_ids(live: LiveServer, runs: Runs) -> None:
    typo = runs.good.id[:7] + ("0" if runs.good.id[7] != "0" else "1")
    for path in (
        f"/v1/evals/runs/{typo}",
        f"/v1/evals/runs/{typo}/results",
        f"/v1/evals/runs/{typo}/report",
    ):
        r = get(live, path)
        assert r.status_code == 404, path
        message = error_of(r)["message"] or ""
        assert message.startswith(f"No eval run {typo!r}. Did you mean {runs.good.id[:8]}"), message
        assert error_of(r)["code"] == "run_not_found"
    r = get(live, "/v1/evals/compare", base=runs.good.id, head="nope")
    assert r.status_code == 404 and error_of(r)["param"] == "head"
    assert "Recent runs: " + runs.other.id[:8] in (error_of(r)["message"] or "")


def test_bad_queries_are_400s_naming_the_field(live: LiveServer, runs: Runs) -> None:
    good, bad, other = runs.good.id, runs.bad.id, runs.other.id
    cases: list[tuple[str, dict[str, str | int | float], str, str]] = [
        ("/v1/evals/runs", {"limit": 0}, "limit", "greater than or equal to 1"),
        ("/v1/evals/runs", {"limit": "many"}, "limit", "valid integer"),
        (f"/v1/evals/runs/{good}/results", {"cell": "capital@3 × good:m"}, "cell", "Its cells"),
        (f"/v1/evals/runs/{good}/results", {"status": "meh"}, "status", "'ok' or 'error'"),
        ("/v1/evals/compare", {"base": good}, "head", "Field required"),
        ("/v1/evals/compare", {"base": good, "head": good}, "head", "are the same run"),
        ("/v1/evals/compare", {"base": good, "head": other}, "head", "different suites"),
        ("/v1/evals/compare", {"base": good, "head": bad, "alpha": 2}, "alpha", "0.5"),
        (
            "/v1/evals/compare",
            {"base": good, "head": bad, "base_model": "good:m", "head_prompt": "nope@1"},
            "cell",
            "no cell for prompt=nope@1",
        ),
    ]
    for path, params, field, text in cases:
        r = get(live, path, **params)
        assert r.status_code == 400, (path, params, r.text)
        err = error_of(r)
        assert field in (err["param"] or ""), (params, err)
        assert text in (err["message"] or ""), (params, err)
    cell = error_of(get(live, f"/v1/evals/runs/{good}/results", cell="capital@1 × god:m"))
    assert "Did you mean 'capital@1 × good:m'?" in (cell["message"] or "")
    # Nothing stored was lost on the way.
    assert len(get(live, "/v1/evals/runs").json()["data"]) == 3


def test_a_prefix_of_several_runs_asks_for_more(live: LiveServer, gw: Gateway) -> None:
    store_prompts(gw.store)
    suite = capitals_suite(["good:m"])
    ids = {Runner(suite, gateway=gw).run().id for _ in range(17)}  # two share a first hex digit
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    r = get(live, f"/v1/evals/runs/{shared}")
    assert r.status_code == 400 and error_of(r)["param"] == "run_id"
    assert "matches more than one run; give more of the id" in (error_of(r)["message"] or "")


def test_with_keys_the_routes_need_one(live: LiveServer, runs: Runs, store: Store) -> None:
    _, secret = create_key(store, "evals")
    paths = [
        "/v1/evals/runs",
        f"/v1/evals/runs/{runs.good.id}",
        f"/v1/evals/runs/{runs.good.id}/results",
        f"/v1/evals/runs/{runs.good.id}/report",
        f"/v1/evals/compare?base={runs.good.id}&head={runs.bad.id}",
        "/v1/prompts",
        "/v1/prompts/capital/versions",
    ]
    for path in paths:
        refused = httpx.get(live.url + path, timeout=30)
        assert refused.status_code == 401, path
        assert "Missing API key" in (error_of(refused)["message"] or "")
        allowed = httpx.get(
            live.url + path, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )
        assert allowed.status_code == 200, (path, allowed.text)


# -- stored prompts -----------------------------------------------------------------------


def test_prompts_their_versions_and_labels(live: LiveServer, store: Store) -> None:
    store_prompts(store)
    listed = get(live, "/v1/prompts").json()
    assert listed["problems"] == []
    assert listed["data"] == [
        {
            "name": "capital",
            "latest": 2,
            "versions": [1, 2],
            "labels": {"production": 1},
            "description": "",
        },
        {"name": "greet", "latest": 1, "versions": [1], "labels": {}, "description": ""},
    ]
    detail = get(live, "/v1/prompts/capital/versions").json()
    assert detail["labels"] == {"production": 1}
    v1, v2 = detail["versions"]
    assert (v1["ref"], v1["labels"], v1["variables"]) == ("capital@1", ["production"], ["country"])
    assert v2["prompt"] == {
        "name": "capital",
        "persona": "a geography teacher",
        "query": "Name the capital city of {{ country }}.",
        "options": {"temperature": 0.1},
    }
    greet = get(live, "/v1/prompts/greet/versions").json()["versions"][0]
    assert greet["variables"] == ["language", "who"]
    assert greet["defaults"] == {"language": "English"}

    # A stored version whose template cannot compile is listed, with why.
    PromptRegistry(store).record(Prompt(name="shout", query="{{ text | loudly }}"))
    (shout,) = get(live, "/v1/prompts/shout/versions").json()["versions"]
    assert shout["variables"] == [] and "No filter named 'loudly'" in shout["problem"]

    missing = get(live, "/v1/prompts/capitol/versions")
    assert missing.status_code == 404 and error_of(missing)["code"] == "prompt_not_found"
    assert "Did you mean 'capital'?" in (error_of(missing)["message"] or "")


def test_prompt_files_of_the_project_are_recorded_and_a_broken_one_is_named(
    live: LiveServer, store: Store
) -> None:
    folder = Path.cwd() / "prompts"
    folder.mkdir()
    (folder / "summary.toml").write_text('query = "Summarize {{ text }}"\n')
    names = [p["name"] for p in get(live, "/v1/prompts").json()["data"]]
    assert names == ["summary"]
    (folder / "summary.toml").write_text('query = "Summarize {{ text }} in one line."\n')
    (folder / "broken.toml").write_text('query = "unclosed\n')
    listed = get(live, "/v1/prompts").json()
    (problem,) = listed["problems"]
    assert "broken.toml" in problem
    # What was stored is still listed.
    assert [(p["name"], p["versions"]) for p in listed["data"]] == [("summary", [1])]
    (folder / "broken.toml").unlink()
    listed = get(live, "/v1/prompts").json()
    assert [(p["name"], p["versions"]) for p in listed["data"]] == [("summary", [1, 2])]


# -- the chat extension: a stored prompt version ------------------------------------------


def chat(live: LiveServer, **body: object) -> httpx.Response:
    return httpx.post(live.url + "/v1/chat/completions", json=body, timeout=30)


def test_chat_with_a_stored_prompt_version_is_traced_as_it(
    live: LiveServer, gw: Gateway, store: Store
) -> None:
    store_prompts(store)
    good = gw.providers["good"]
    assert isinstance(good, FunctionModel)
    r = chat(
        live,
        model="good:m",
        messages=[],
        outcrop={"prompt": "capital@2", "variables": {"country": "Peru"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "The capital of Peru is Lima."
    sent = good.requests[-1]
    assert [m.text for m in sent.messages] == [
        "You are a geography teacher.",
        "Name the capital city of Peru.",
    ]
    assert sent.temperature == 0.1  # the version's options
    trace = store.get(r.headers["x-outcrop-trace-id"])
    assert trace is not None and (trace.prompt_name, trace.prompt_version) == ("capital", 2)

    # A label, streamed, a follow-up after the prompt, and the request's own options first.
    streamed = chat(
        live,
        model="good:m",
        stream=True,
        temperature=0.7,
        messages=[
            {"role": "assistant", "content": "The capital of Chad is N'Djamena."},
            {"role": "user", "content": "And Kenya?"},
        ],
        outcrop={"prompt": "capital@production", "variables": {"country": "Chad"}},
    )
    assert streamed.status_code == 200 and "Nairobi" in streamed.text
    sent = good.requests[-1]
    assert [m.role for m in sent.messages] == ["user", "assistant", "user"]
    assert sent.messages[0].text == "What is the capital of Chad?" and sent.temperature == 0.7
    trace = store.get(streamed.headers["x-outcrop-trace-id"])
    assert trace is not None and (trace.prompt_name, trace.prompt_version) == ("capital", 1)


def test_the_openai_sdk_sends_the_extension_in_extra_body(live: LiveServer, store: Store) -> None:
    store_prompts(store)
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="none", max_retries=0)
    try:
        answer = client.chat.completions.create(
            model="good:m",
            messages=[],
            extra_body={"outcrop": {"prompt": "greet", "variables": {"who": "Ada"}}},
        )
        assert answer.choices[0].message.content == "I am not sure."
        with pytest.raises(openai.BadRequestError, match="Did you mean 'capital'"):
            client.chat.completions.create(
                model="good:m", messages=[], extra_body={"outcrop": {"prompt": "capitl@1"}}
            )
    finally:
        client.close()
    (row,) = store.recent(limit=5)
    assert (row.prompt_name, row.prompt_version) == ("greet", 1)


def test_bad_prompt_references_and_variables_are_400s_naming_the_field(
    live: LiveServer, store: Store
) -> None:
    store_prompts(store)
    country = {"country": "Peru"}
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"prompt": "capitol", "variables": country}, "outcrop.prompt", "Did you mean 'capital'"),
        ({"prompt": "capital@9", "variables": country}, "outcrop.prompt", "versions: 1, 2"),
        ({"prompt": "capital@prod", "variables": country}, "outcrop.prompt", "'production'"),
        ({"prompt": "capital@2"}, "outcrop.variables", "Missing variable 'country'"),
        (
            {"prompt": "capital@2", "variables": {"contry": "Peru"}},
            "outcrop.variables",
            "Did you mean 'country' for 'contry'?",
        ),
        ({"prompt": "capital@2", "variables": {"country": None}}, "outcrop.variables", "country"),
        ({"prompt": "capital@2", "vars": country}, "outcrop.vars", "Extra inputs"),
        ({"prompt": ""}, "outcrop.prompt", "at least 1 character"),
    ]
    for extension, field, text in cases:
        r = chat(live, model="good:m", messages=[], outcrop=extension)
        assert r.status_code == 400, (extension, r.text)
        err = error_of(r)
        assert err["param"] == field, (extension, err)
        assert text in (err["message"] or ""), (extension, err)
    PromptRegistry(store).record(Prompt(name="shout", query="{{ text | loudly }}"))
    broken = chat(live, model="good:m", messages=[], outcrop={"prompt": "shout"})
    assert broken.status_code == 400 and error_of(broken)["param"] == "outcrop.prompt"
    assert "No filter named 'loudly'" in (error_of(broken)["message"] or "")
    empty = chat(live, model="good:m", messages=[])
    assert empty.status_code == 400 and error_of(empty)["param"] == "messages"
    assert "give at least one message (or outcrop.prompt" in (error_of(empty)["message"] or "")
    assert store.recent(limit=5) == []  # none of them called a model


# -- the docs say what the server does ----------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_endpoints_in_the_evaluation_guide_are_served(live: LiveServer) -> None:
    text = (DOCS / "evaluation.md").read_text(encoding="utf-8")
    section = text.split("## In the browser", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `GET ([^`?]+)[^`]*` \|", section, flags=re.M)
    assert len(listed) == 5
    paths = get(live, "/openapi.json").json()["paths"]
    for path in listed:
        assert "get" in paths.get(path, {}), path


def test_the_chat_extension_example_in_the_prompt_guide_runs(
    live: LiveServer, store: Store
) -> None:
    text = (DOCS / "prompts.md").read_text(encoding="utf-8")
    support = re.findall(r"```toml\n(.*?)```", text, flags=re.S)[0]  # prompts/support.toml
    (example,) = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    folder = Path.cwd() / "prompts"
    folder.mkdir()
    (folder / "support.toml").write_text(support)
    PromptRegistry(store).promote("support", 1)  # records the file as version 1 on the way
    body = {**json.loads(example), "model": "good:m"}  # the test double for the local model
    r = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200 and "data: [DONE]" in r.text, r.text
    trace = store.get(r.headers["x-outcrop-trace-id"])
    assert trace is not None and (trace.prompt_name, trace.prompt_version) == ("support", 1)
    assert "Can I return a book?" in json.dumps(trace.request)
