"""``outcrop serve`` checked with the official ``openai`` SDK over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.providers.testing import FunctionModel, TestModel
from outcrop.serve.app import ServeConfig, create_app
from outcrop.serve.keys import KeyLimits, create_key
from outcrop.types import ChatRequest, ToolCall

from .serving import LiveServer


def echo(request: ChatRequest) -> object:
    last = request.messages[-1].text
    if request.tools and request.tool_choice != "none":
        return ToolCall(id="call_1", name=request.tools[0].name, arguments={"city": "Paris"})
    if request.response_format is not None:
        return json.dumps({"name": "Ada", "age": 36})
    return f"You said: {last}"


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={"fn": FunctionModel(echo)},
        sleep=lambda s: None,
    )


@pytest.fixture
def live(gw: Gateway) -> Iterator[LiveServer]:
    server = LiveServer(create_app(gw, ServeConfig(max_body_bytes=64 * 1024))).start()
    yield server
    server.stop()


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(live: LiveServer, key: str = "none") -> openai.OpenAI:
    c = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)
    _clients.append(c)
    return c


def test_chat_plain_and_streamed_with_usage(live: LiveServer, store: Store) -> None:
    c = client(live)
    r = c.chat.completions.create(model="fn:echo", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "You said: hi"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 3
    chunks = list(
        c.chat.completions.create(
            model="fn:echo",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "You said: stream please"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    rows = store.recent(limit=10)
    assert len(rows) == 2 and {r.stream for r in rows} == {True}
    assert all(r.status == "ok" for r in rows)


def test_tools_json_schema_embeddings_and_models(live: LiveServer, store: Store) -> None:
    c = client(live)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    r = c.chat.completions.create(
        model="fn:echo",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="required",
    )
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert r.choices[0].finish_reason == "tool_calls"
    # The call goes back with its result, as the SDK's users send it.
    follow = c.chat.completions.create(
        model="fn:echo",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            r.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "18 °C"},
        ],
    )
    assert follow.choices[0].message.content == "You said: 18 °C"

    streamed = list(
        c.chat.completions.create(
            model="fn:echo",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=tools,  # type: ignore[arg-type]
            stream=True,
        )
    )
    deltas = [d for ch in streamed if ch.choices for d in ch.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function.name == "get_weather"  # type: ignore[union-attr]

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    r = c.chat.completions.create(
        model="fn:echo",
        messages=[{"role": "user", "content": "Who?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content or "") == {"name": "Ada", "age": 36}

    listed = httpx.get(live.url + "/v1/models").json()["data"]
    assert listed and all(isinstance(m["default"], bool) for m in listed)
    assert [m.id for m in c.models.list()] == [m["id"] for m in listed]


@pytest.mark.slow
def test_embeddings_with_the_local_embedder(live: LiveServer) -> None:
    c = client(live)
    e = c.embeddings.create(model="local:all-minilm-l6-v2", input=["a cat", "a dog"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 384
    assert e.usage.prompt_tokens > 0
    b64 = c.embeddings.create(
        model="local:all-minilm-l6-v2", input="a cat", encoding_format="base64"
    )
    raw = base64.b64decode(b64.data[0].embedding)  # type: ignore[arg-type]
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(e.data[0].embedding, abs=1e-6)
    # The integer model (knowledge bases' default): its own vectors, close to the float one's.
    q = c.embeddings.create(model="local:all-minilm-l6-v2-int8", input=["a cat", "a dog"])
    assert [len(d.embedding) for d in q.data] == [384, 384]
    assert q.usage.prompt_tokens == e.usage.prompt_tokens
    cosine = sum(x * y for x, y in zip(q.data[0].embedding, e.data[0].embedding, strict=True))
    assert 0.98 < cosine < 0.99999


def test_keys_scopes_and_authentication_failures(live: LiveServer, store: Store) -> None:
    _, secret = create_key(store, "app", models=["fn:*"])
    _, narrow = create_key(store, "narrow", models=["local:*"])
    with pytest.raises(openai.AuthenticationError) as err:
        client(live, "oc-wrong").chat.completions.create(
            model="fn:echo", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 401 and "Incorrect API key" in str(err.value)
    missing = httpx.post(live.url + "/v1/chat/completions", json={"model": "fn:echo"})
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.text
    assert httpx.get(live.url + "/health").status_code == 200  # the one open endpoint
    assert httpx.get(live.url + "/metrics").status_code == 401
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'fn:echo'"):
        client(live, narrow).chat.completions.create(
            model="fn:echo", messages=[{"role": "user", "content": "hi"}]
        )
    r = client(live, secret).chat.completions.create(
        model="fn:echo", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.choices[0].message.content == "You said: hi"
    row = store.recent(limit=1)[0]
    assert row.api_key is not None and secret not in json.dumps(row.to_dict())
    assert secret not in (store.path.read_bytes().decode("latin-1"))  # only its hash is stored
    store.revoke_api_key("app", time.time())
    with pytest.raises(openai.AuthenticationError):
        client(live, secret).chat.completions.create(
            model="fn:echo", messages=[{"role": "user", "content": "hi"}]
        )


def test_rate_limits_and_budgets_count_streams_exactly(live: LiveServer, store: Store) -> None:
    _, limited = create_key(store, "rpm", limits=KeyLimits(requests_per_minute=2))
    c = client(live, limited)
    for _ in range(2):
        c.chat.completions.create(model="fn:echo", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="fn:echo", messages=[{"role": "user", "content": "x"}])
    assert err.value.response.headers["retry-after"]
    assert "2 requests per minute" in str(err.value)

    budget_key, budget = create_key(store, "budget", limits=KeyLimits(tokens_per_day=20))
    c = client(live, budget)
    # Streamed: the trace row holds the exact usage, which the budget reads.
    list(
        c.chat.completions.create(
            model="fn:echo",
            messages=[{"role": "user", "content": "one two three four five six"}],
            stream=True,
        )
    )
    used = sum(
        r.input_tokens + r.output_tokens
        for r in store.recent(limit=10)
        if r.api_key == budget_key.id
    )
    assert 0 < used < 20
    # max_tokens is capped to what is left of the budget.
    r = c.chat.completions.create(
        model="fn:echo", messages=[{"role": "user", "content": "a b"}], max_tokens=1000
    )
    assert r.usage is not None and r.usage.completion_tokens <= 20 - used
    while True:
        try:
            c.chat.completions.create(
                model="fn:echo", messages=[{"role": "user", "content": "more words here"}]
            )
        except openai.RateLimitError as exc:
            assert "Budget exhausted" in str(exc) and exc.code == "insufficient_quota"
            break


def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(live: LiveServer) -> None:
    url = live.url + "/v1/chat/completions"
    cases = [
        (
            httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}),
            400,
            "not valid JSON",
        ),
        (httpx.post(url, json={"model": "fn:echo", "messages": "hi"}), 400, "messages"),
        (
            httpx.post(
                url, json={"model": "nope:x", "messages": [{"role": "user", "content": "h"}]}
            ),
            404,
            "nope:x",
        ),
        (
            httpx.post(
                url,
                json={
                    "model": "fn:echo",
                    "max_tokens": -5,
                    "messages": [{"role": "user", "content": "h"}],
                },
            ),
            400,
            "max_tokens",
        ),
        (
            httpx.post(
                url,
                json={
                    "model": "fn:echo",
                    "messages": [{"role": "user", "content": "h"}],
                    "tools": [{"type": "function", "function": {"name": "bad name!"}}],
                },
            ),
            400,
            "bad name!",
        ),
        (
            httpx.post(
                url,
                json={
                    "model": "fn:echo",
                    "messages": [{"role": "user", "content": "h"}],
                    "tools": [
                        {"type": "function", "function": {"name": "f", "parameters": "nope"}}
                    ],
                },
            ),
            400,
            "parameters",
        ),
        (
            httpx.post(
                url,
                json={"model": "fn:echo", "n": 3, "messages": [{"role": "user", "content": "h"}]},
            ),
            400,
            "n must be 1",
        ),
        (
            httpx.post(
                url, content=b"x" * (65 * 1024), headers={"content-type": "application/json"}
            ),
            413,
            "limit",
        ),
        (httpx.get(live.url + "/v2/nothing"), 404, "No such endpoint"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, (status, response.text)
        body = response.json()
        assert text in body["error"]["message"], body
        assert body["error"]["type"]
    ok = client(live).chat.completions.create(
        model="fn:echo", messages=[{"role": "user", "content": "still here"}]
    )
    assert ok.choices[0].message.content == "You said: still here"


def test_a_50_mb_body_is_refused_without_reading_it(gw: Gateway) -> None:
    server = LiveServer(create_app(gw, ServeConfig())).start()
    try:
        big = b"{" + b" " * (50 * 1024 * 1024) + b"}"
        r = httpx.post(
            server.url + "/v1/chat/completions",
            content=big,
            timeout=60,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and "4,194,304 bytes" in r.json()["error"]["message"]
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        server.stop()


def test_a_client_that_disconnects_mid_stream_stops_the_generation(store: Store) -> None:
    produced: list[int] = []

    def slow_words(request: ChatRequest) -> Iterator[str]:
        for i in range(200):
            produced.append(i)
            time.sleep(0.01)
            yield f"w{i} "

    gateway = Gateway(settings=Settings(), store=store, providers={"s": FunctionModel(slow_words)})
    server = LiveServer(create_app(gateway)).start()
    try:
        with httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json={"model": "s:m", "stream": True, "messages": [{"role": "user", "content": "go"}]},
        ) as response:
            lines = response.iter_lines()
            for _ in range(5):
                next(lines)
        deadline = time.time() + 5
        while time.time() < deadline and not store.recent(limit=1):
            time.sleep(0.05)
        row = store.recent(limit=1)[0]
        assert row.status == "cancelled" and 0 < row.output_tokens < 200
        time.sleep(0.3)
        assert len(produced) < 150  # the generation stopped, not only the response
    finally:
        server.stop()


def test_the_local_queue_is_fifo_and_refuses_beyond_its_length(store: Store) -> None:
    order: list[str] = []
    gate = threading.Event()

    def wait_then_answer(request: ChatRequest) -> str:
        order.append(request.messages[-1].text)
        gate.wait(5)
        return "done"

    class FakeLocal(FunctionModel):
        name = "local"

    gateway = Gateway(
        settings=Settings(), store=store, providers={"local": FakeLocal(wait_then_answer)}
    )
    server = LiveServer(create_app(gateway, ServeConfig(queue_max=2, queue_timeout=5))).start()
    url = server.url + "/v1/chat/completions"
    results: dict[str, int] = {}

    def ask(text: str) -> None:
        r = httpx.post(
            url,
            json={"model": "local:m", "messages": [{"role": "user", "content": text}]},
            timeout=30,
        )
        results[text] = r.status_code
        if r.status_code == 429:
            results[text + ":retry"] = int(r.headers["retry-after"])

    try:
        threads = []

        def settled(n: int) -> None:  # the server holds n requests: one served, n-1 waiting
            deadline = time.time() + 10
            while time.time() < deadline:
                waiting = httpx.get(server.url + "/health").json()["queues"].get("local:m", 0)
                if len(order) == 1 and waiting == n - 1:
                    return
                time.sleep(0.02)
            raise AssertionError(f"the server did not queue {n} requests")

        for n, text in enumerate(("first", "second", "third"), start=1):
            t = threading.Thread(target=ask, args=(text,))
            t.start()
            threads.append(t)
            settled(n)  # so they arrive in this order, however busy the machine
        ask("fourth")  # one served, two waiting: refused at once
        assert results["fourth"] == 429 and results["fourth:retry"] >= 1
        gate.set()
        for t in threads:
            t.join()
        assert order == ["first", "second", "third"]
        assert results["first"] == results["second"] == results["third"] == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert 'outcrop_rejected_total{reason="queue_full"} 1' in metrics
        assert "outcrop_requests_total" in metrics
    finally:
        gate.set()
        server.stop()


def test_openapi_document_lists_the_api(live: LiveServer) -> None:
    doc = httpx.get(live.url + "/openapi.json").json()
    for path in (
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/metrics",
        "/v1/knowledge-bases/{name}/search",
        "/v1/knowledge-bases/{name}/ask",
        "/v1/agents/{name}/runs",
    ):
        assert path in doc["paths"], path


def test_a_provider_error_keeps_its_meaning(store: Store) -> None:
    from outcrop.errors import ProviderError

    model = TestModel([ProviderError("upstream overloaded", status_code=503)] * 5)
    gateway = Gateway(
        settings=Settings(), store=store, providers={"test": model}, sleep=lambda s: None
    )
    server = LiveServer(create_app(gateway)).start()
    try:
        with pytest.raises(openai.APIStatusError) as err:
            client(server).chat.completions.create(
                model="test", messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.status_code == 502 and "upstream overloaded" in str(err.value)
    finally:
        server.stop()


def test_knowledge_base_answers_count_against_the_key_that_asked(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A kb ask makes its own model call: it must carry the key, or budgets miss it."""
    from outcrop.rag import KnowledgeBase

    gw = Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={"fn": FunctionModel(lambda r: "Returns are free [1].")},
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nReturns are free within 30 days.")
    base = KnowledgeBase.create("policies", gateway=gw)
    base.add(docs)
    base.close()
    key, secret = create_key(store, "asker")
    server = LiveServer(create_app(gw)).start()
    try:
        r = httpx.post(
            server.url + "/v1/knowledge-bases/policies/ask",
            json={"question": "Are returns free?"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 200, r.text
    finally:
        server.stop()
    asked = [row for row in store.recent(limit=20) if row.prompt_name == "kb:policies"]
    assert asked and asked[0].api_key == key.id
    assert store.key_usage(key.id, 0)[0] > 0


def test_keys_cli_create_list_revoke_and_bad_input(capsys, store: Store) -> None:  # type: ignore[no-untyped-def]
    import json as _json

    from .helpers import run

    code, out, err = run(capsys, "keys", "create", "app", "--model", "local:*", "--rpm", "30")
    secret = out.strip()
    assert code == 0 and secret.startswith("oc-") and "shown only now" in err
    code, out, _ = run(capsys, "keys", "list", "--api", "--json")
    listed = _json.loads(out)
    assert listed[0]["name"] == "app" and listed[0]["limits"] == {"requests_per_minute": 30}
    assert secret not in out  # never shown again
    code, _, err = run(capsys, "keys", "create", "app")
    assert code == 1 and "A key named 'app' exists already" in err
    code, _, err = run(capsys, "keys", "create", "no spaces")
    assert code == 1 and "not valid" in err
    code, _, err = run(capsys, "keys", "create", "x", "--rpm", "0")
    assert code == 2 and "rpm" in err
    code, out, _ = run(capsys, "keys", "revoke", "app")
    assert code == 0 and "Revoked" in out
    code, _, err = run(capsys, "keys", "revoke", "app")
    assert code == 1 and "No live API key named 'app'" in err
    code, out, _ = run(capsys, "keys", "list", "--api")
    assert "No API keys" in out


class _Priced(FunctionModel):
    """A function model with a price: a micro-dollar per output token."""

    def cost(self, model: str, usage: object) -> float | None:
        return getattr(usage, "output_tokens", 0) * 1e-6


def test_metrics_count_model_calls_by_model_prompt_version_and_key(store: Store) -> None:
    from outcrop.errors import ProviderError
    from outcrop.gateway import TraceInfo

    gw = Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={
            "fn": _Priced(lambda r: "one two three"),
            "down": TestModel([ProviderError("upstream broke", status_code=500)] * 3),
        },
        sleep=lambda s: None,
    )
    key, secret = create_key(store, "mobile-app")
    agents = {"helper": {"model": "fn:echo", "tools": ["calculator"]}}
    server = LiveServer(create_app(gw, ServeConfig(agents=agents))).start()
    try:
        oc = client(server, secret)
        oc.chat.completions.create(model="fn:echo", messages=[{"role": "user", "content": "a"}])
        streamed = oc.chat.completions.create(
            model="fn:echo", messages=[{"role": "user", "content": "b"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        with pytest.raises(openai.APIStatusError):
            oc.chat.completions.create(model="down:x", messages=[{"role": "user", "content": "c"}])
        # An agent run the server makes: its step counts, the run (its sum) does not.
        run = httpx.post(
            server.url + "/v1/agents/helper/runs",
            json={"task": "Say three words"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert run.status_code == 200 and run.json()["status"] == "done"
        # A call with a prompt version, made in the server's process for the same key.
        gw.chat(
            "Hello there",
            trace=TraceInfo(prompt_name="support", prompt_version=3, api_key=key.id),
        )
        scrape = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {secret}"})
    finally:
        server.stop()
    assert scrape.status_code == 200
    text = scrape.text
    plain = 'model="fn:echo",prompt="",prompt_version="",key="mobile-app"'
    versioned = 'model="fn:echo",prompt="support",prompt_version="3",key="mobile-app"'
    down = 'model="down:x",prompt="",prompt_version="",key="mobile-app"'
    assert f'outcrop_model_calls_total{{{plain},status="ok"}} 3' in text  # chat, stream, step
    assert f'outcrop_model_calls_total{{{versioned},status="ok"}} 1' in text
    assert f'outcrop_model_calls_total{{{down},status="error"}} 1' in text
    assert f'outcrop_model_errors_total{{{down},error="ProviderError"}} 1' in text
    assert f'outcrop_tokens_total{{{plain},direction="output"}} 9' in text
    assert f'outcrop_tokens_total{{{versioned},direction="input"}} 2' in text
    assert f'outcrop_tokens_total{{{versioned},direction="output"}} 3' in text
    assert f"outcrop_cost_usd_total{{{plain}}} 9e-06" in text
    assert f"outcrop_model_latency_seconds_count{{{plain}}} 3" in text
    assert f'outcrop_model_latency_seconds_bucket{{{plain},le="+Inf"}} 3' in text
    assert f"outcrop_model_ttft_seconds_count{{{versioned}}} 1" in text
    assert "# TYPE outcrop_model_latency_seconds histogram" in text
    assert 'outcrop_requests_total{route="/v1/chat/completions",status="200"} 2' in text
    assert secret not in text and key.id not in text


def test_metric_labels_are_bounded() -> None:
    from outcrop.observe.store import TraceRow
    from outcrop.serve.metrics import Metrics

    metrics = Metrics()
    metrics.max_values = 2
    metrics.max_series = 3

    def row(model: str, prompt: str | None = None) -> TraceRow:
        return TraceRow(
            id=model + str(prompt),
            started_at=time.time(),
            requested_model=model,
            model=model,
            stream=False,
            status="ok",
            request={},
            prompt_name=prompt,
            latency_ms=10.0,
        )

    metrics.observe([row("m1"), row("m2"), row("m3"), row("m4")])
    text = metrics.render()
    m1 = 'model="m1",prompt="",prompt_version="",key=""'
    assert f'outcrop_model_calls_total{{{m1},status="ok"}} 1' in text
    assert 'model="other",prompt="",prompt_version="",key="",status="ok"} 2' in text
    assert "m3" not in text and "m4" not in text
    # A full metric counts a new label set under "other" in every bounded label.
    metrics.observe([row("m1", "p1")])
    text = metrics.render()
    assert 'outcrop_model_calls_total{model="m1",prompt="p1"' not in text
    assert 'model="other",prompt="other",prompt_version="other",key="other",status="ok"} 1' in text


def test_a_server_process_freezes_what_it_loaded_and_collects_less_often() -> None:
    """``outcrop serve`` calls tune_gc before it serves; run here in a process of its own,
    since it changes the interpreter's collector for good."""
    import subprocess
    import sys

    script = (
        "import gc\n"
        "from outcrop.serve.app import tune_gc\n"
        "before = gc.get_freeze_count()\n"
        "tune_gc()\n"
        "print(gc.get_threshold(), before == 0 < gc.get_freeze_count())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(20000, 20, 20) True"
