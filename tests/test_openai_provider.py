"""The OpenAI-compatible provider against real HTTP servers on loopback.

``llama_server``: llama.cpp's own server (llama-cpp-python[server]) serving the
packaged GGUF. ``fake``: the tests' own server for the faults a real one rarely shows
on demand (429, 500, a broken stream, a hang) and for OpenAI's streamed usage.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from outcrop import (
    AllModelsFailedError,
    Gateway,
    MissingKeyError,
    ProviderError,
    ProviderTimeoutError,
    Settings,
    Store,
)
from outcrop.config import BUILTIN_ENDPOINTS, EndpointSettings, RetrySettings
from outcrop.providers.local import LocalProvider
from outcrop.providers.testing import TestModel

from .fake_openai import ANSWER, USAGE, FakeOpenAI

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = LocalProvider().model_path("smollm2-135m")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--chat_format",
            "chatml-function-calling",
            "--embedding",
            "true",
            "--verbose",
            "false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(base + "/models", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                log.close()
                raise RuntimeError(
                    "llama.cpp server did not start: " + log_path.read_text()[-2000:]
                ) from None
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def _gateway(store: Store, base_url: str, **settings) -> Gateway:
    providers = settings.pop("providers", None)
    endpoints = {
        **BUILTIN_ENDPOINTS,
        "srv": EndpointSettings(
            base_url=base_url, json_schema_mode=settings.pop("mode", "json_schema")
        ),
    }
    return Gateway(
        settings=Settings(default_model="srv:smollm2", endpoints=endpoints, **settings),
        store=store,
        providers=providers,
        sleep=lambda s: None,
    )


# -- llama.cpp's server ------------------------------------------------------


@pytest.mark.slow
class TestLlamaCppServer:
    @pytest.fixture
    def gw(self, store: Store, llama_server: str) -> Gateway:
        return _gateway(store, llama_server, mode="json_object")

    def test_plain_chat_with_exact_usage(self, gw: Gateway, store: Store):
        response = gw.chat("What is a token?", max_tokens=12, temperature=0)
        assert response.model == "srv:smollm2"
        assert response.text.strip()
        assert response.usage.output_tokens == 12
        assert response.usage.input_tokens > 3
        assert not response.usage.estimated
        row = store.get(response.id)
        assert (row.output_tokens, row.usage_estimated) == (12, False)

    def test_streaming_gives_the_same_text(self, gw: Gateway, store: Store):
        plain = gw.chat("Name a colour.", max_tokens=10, temperature=0, seed=1)
        stream = gw.stream("Name a colour.", max_tokens=10, temperature=0, seed=1)
        assert "".join(stream.text()) == plain.text
        usage = stream.response.usage
        # llama-cpp-python's server sends no usage in streams: outcrop counts the streamed
        # tokens and marks the figure as estimated, in the response and in the trace.
        assert usage.estimated
        assert usage.output_tokens == plain.usage.output_tokens
        assert store.get(stream.trace_id).usage_estimated

    def test_a_tool_call_plain_and_streamed(self, gw: Gateway):
        for stream in (False, True):
            kwargs = dict(tools=[WEATHER], tool_choice={"name": "get_weather"}, max_tokens=40)
            if stream:
                s = gw.stream("What is the weather in Paris?", **kwargs)
                response = s.collect()
            else:
                response = gw.chat("What is the weather in Paris?", **kwargs)
            assert response.finish_reason == "tool_calls"
            (call,) = response.tool_calls
            assert call.name == "get_weather"
            assert isinstance(call.arguments.get("city"), str)

    def test_a_json_schema_answer(self, gw: Gateway):
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        }
        response = gw.chat(
            "Invent a person.",
            max_tokens=60,
            response_format={"type": "json_schema", "json_schema": schema},
        )
        data = response.parse_json()
        assert isinstance(data["name"], str) and isinstance(data["age"], int)

    def test_per_token_embeddings_are_refused_clearly(self, gw: Gateway):
        # This server returns one vector per token for a model without pooling.
        with pytest.raises(ProviderError, match="one vector per token"):
            gw.embed(["hello world"], model="srv:smollm2")


# -- faults and OpenAI's own stream shape ----------------------------------


def test_streamed_usage_from_the_server_is_exact(store: Store, fake: FakeOpenAI):
    gw = _gateway(store, fake.base_url)
    stream = gw.stream("hi")
    assert "".join(stream.text()) == "".join(ANSWER)
    usage = stream.response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (11, 5, False)
    assert fake.requests[0]["body"]["stream_options"] == {"include_usage": True}
    plain = gw.chat("hi")
    assert plain.usage == usage


def test_request_shape(store: Store, fake: FakeOpenAI):
    gw = _gateway(store, fake.base_url)
    gw.chat(
        "hi",
        system="be brief",
        temperature=0.5,
        top_p=0.9,
        max_tokens=20,
        stop=["END"],
        seed=3,
        tools=[WEATHER],
        tool_choice="required",
        response_format=None,
    )
    body = fake.requests[0]["body"]
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        0.5,
        0.9,
        20,
        3,
    )
    assert body["stop"] == ["END"]
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tool_choice"] == "required"


def test_streamed_tool_call_deltas_are_assembled(store: Store, fake: FakeOpenAI):
    fake.script.extend(["tools", "tools"])
    gw = _gateway(store, fake.base_url)
    streamed = gw.stream("weather?", tools=[WEATHER]).collect()
    plain = gw.chat("weather?", tools=[WEATHER])
    for response in (streamed, plain):
        assert response.finish_reason == "tool_calls"
        assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
            ("call_1", "get_weather", {"city": "Paris"})
        ]
        assert response.usage.output_tokens == USAGE["completion_tokens"]


def test_tool_results_go_back_in_openai_shape(store: Store, fake: FakeOpenAI):
    from outcrop import Message, ToolCall

    gw = _gateway(store, fake.base_url)
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    gw.chat(
        [
            Message.user("weather?"),
            Message.assistant("", tool_calls=[call]),
            Message.tool("call_1", "sunny"),
        ],
        tools=[WEATHER],
    )
    messages = fake.requests[0]["body"]["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_429_is_retried_after_retry_after(store: Store, fake: FakeOpenAI):
    fake.script.append("429")
    sleeps: list[float] = []
    gw = _gateway(store, fake.base_url)
    gw._sleep = sleeps.append
    response = gw.chat("hi")
    assert response.text == "".join(ANSWER)
    assert sleeps == [0.0]
    attempts = store.get(response.id).attempts
    assert [a["status_code"] for a in attempts] == [429, None]


def test_500s_exhaust_retries_then_fall_back(store: Store, fake: FakeOpenAI):
    fake.script.extend(["500", "500", "500"])
    gw = _gateway(
        store, fake.base_url, fallbacks=["test"], providers={"test": TestModel(["local answer"])}
    )
    response = gw.chat("hi")
    assert (response.model, response.text) == ("test", "local answer")
    row = store.get(response.id)
    assert [(a["model"], a["status_code"]) for a in row.attempts] == [
        ("srv:smollm2", 500),
        ("srv:smollm2", 500),
        ("srv:smollm2", 500),
        ("test", None),
    ]


def test_a_stream_broken_before_any_text_is_retried(store: Store, fake: FakeOpenAI):
    fake.script.append("broken")
    gw = _gateway(store, fake.base_url)
    stream = gw.stream("hi")
    assert "".join(stream.text()) == "".join(ANSWER)
    attempts = store.get(stream.trace_id).attempts
    assert "broke off" in attempts[0]["error"]
    assert attempts[1]["error"] is None


def test_a_stream_broken_mid_answer_is_an_error_not_a_retry(store: Store, fake: FakeOpenAI):
    fake.script.append("broken-mid")
    gw = _gateway(store, fake.base_url)
    stream = gw.stream("hi")
    pieces: list[str] = []
    with pytest.raises(ProviderError, match="broke off"):
        for piece in stream.text():
            pieces.append(piece)
    assert pieces == ["Hello"]
    row = store.get(stream.trace_id)
    assert (row.status, len(row.attempts)) == ("error", 1)


def test_a_hang_times_out_and_falls_back(store: Store, fake: FakeOpenAI):
    fake.script.extend(["hang", "hang"])
    fake.hang_s = 3
    gw = _gateway(
        store,
        fake.base_url,
        retry=RetrySettings(timeout_s=0.5, max_attempts=2),
        fallbacks=["test"],
        providers={"test": TestModel(["backup"])},
    )
    started = time.monotonic()
    response = gw.chat("hi")
    assert time.monotonic() - started < 2.9
    assert response.model == "test"
    errors = [a["error"] for a in store.get(response.id).attempts]
    assert "did not answer within 0.5 s" in errors[0] and "did not answer" in errors[1]


def test_a_hang_with_no_fallback_raises_a_timeout(store: Store, fake: FakeOpenAI):
    fake.script.append("hang")
    fake.hang_s = 2
    gw = _gateway(store, fake.base_url, retry=RetrySettings(timeout_s=0.3, max_attempts=1))
    with pytest.raises(ProviderTimeoutError, match="timeout_s"):
        gw.chat("hi")
    assert store.recent(1)[0].status == "error"


def test_a_rejected_key_names_the_fix(store: Store, fake: FakeOpenAI):
    fake.script.append("401")
    gw = _gateway(store, fake.base_url)
    with pytest.raises(ProviderError, match=r"rejected the key \(401\).*outcrop keys set srv"):
        gw.chat("hi")


def test_a_wrong_base_url_names_the_fix(store: Store):
    gw = _gateway(store, f"http://127.0.0.1:{_free_port()}/v1", retry=RetrySettings(max_attempts=1))
    with pytest.raises(
        ProviderError, match=r"Cannot reach srv .*Check base_url in \[endpoints.srv\]"
    ):
        gw.chat("hi")


def test_openai_without_a_key_names_the_fix(store: Store, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    gw = Gateway(settings=Settings(), store=store)
    with pytest.raises(
        MissingKeyError, match=r"set OPENAI_API_KEY or run `outcrop keys set openai`"
    ):
        gw.chat("hi", model="openai:gpt-4o-mini")


def test_keys_resolve_explicit_then_stored_then_environment(
    store: Store, monkeypatch, fake: FakeOpenAI
):
    from outcrop.keys import set_key
    from outcrop.providers.openai import OpenAIProvider

    endpoint = EndpointSettings(base_url=fake.base_url)
    monkeypatch.setenv("SRV_API_KEY", "from-env")
    assert OpenAIProvider("srv", endpoint)._key() == "from-env"
    set_key("srv", "stored")
    assert OpenAIProvider("srv", endpoint)._key() == "stored"
    assert OpenAIProvider("srv", endpoint, api_key="explicit")._key() == "explicit"
    gw = Gateway(settings=Settings(endpoints={"srv": endpoint}), store=store, sleep=lambda s: None)
    gw.chat("hi", model="srv:m")
    headers = {k.lower(): v for k, v in fake.requests[0]["headers"].items()}
    assert headers["authorization"] == "Bearer stored"


def test_embeddings(store: Store, fake: FakeOpenAI):
    gw = _gateway(store, fake.base_url)
    result = gw.embed(["a", "abc"], model="srv:embedder")
    assert result.vectors == [[1.0, 1.0, 0.5], [3.0, 1.0, 0.5]]
    assert result.usage.input_tokens == 14
    row = store.get(result.id)
    assert (row.kind, row.input_tokens, row.status) == ("embedding", 14, "ok")


def test_embedding_errors_are_retried_and_traced(store: Store, fake: FakeOpenAI):
    fake.script.extend(["429"])
    gw = _gateway(store, fake.base_url)
    result = gw.embed("one text", model="srv:embedder")
    assert len(result.vectors) == 1
    assert [a["status_code"] for a in store.get(result.id).attempts] == [429, None]


def test_images_are_saved_and_traced(store: Store, fake: FakeOpenAI, tmp_path: Path):
    gw = _gateway(store, fake.base_url)
    result = gw.generate_image("a red dot", model="srv:painter", count=2, out_dir=tmp_path / "img")
    assert len(result.paths) == 2
    for path in result.paths:
        assert path.read_bytes().startswith(b"\x89PNG")
    row = store.get(result.id)
    assert row.kind == "image" and row.status == "ok"
    assert fake.requests[0]["body"]["response_format"] == "b64_json"


def test_every_model_failing_lists_each(store: Store, fake: FakeOpenAI):
    fake.script.extend(["500", "500"])
    gw = _gateway(
        store,
        fake.base_url,
        retry=RetrySettings(max_attempts=1),
        fallbacks=["test"],
        providers={"test": TestModel([ProviderError("down too", status_code=503)])},
    )
    with pytest.raises(AllModelsFailedError, match=r"srv:smollm2.*test"):
        gw.chat("hi")


def test_cost_is_the_same_streamed_or_plain(store: Store, fake: FakeOpenAI, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    endpoints = {**BUILTIN_ENDPOINTS}
    endpoints["openai"] = BUILTIN_ENDPOINTS["openai"].model_copy(update={"base_url": fake.base_url})
    gw = Gateway(settings=Settings(endpoints=endpoints), store=store)
    plain = gw.chat("hi", model="openai:gpt-4o-mini-2024-07-18")
    stream = gw.stream("hi", model="openai:gpt-4o-mini-2024-07-18")
    stream.collect()
    expected = (11 * 0.15 + 5 * 0.60) / 1e6
    assert plain.cost_usd == pytest.approx(expected)
    assert stream.response.cost_usd == pytest.approx(expected)
    costs = [r.cost_usd for r in store.recent(2)]
    assert costs == [pytest.approx(expected)] * 2


def test_parallel_calls_that_share_an_index_stay_apart(store: Store, fake: FakeOpenAI):
    fake.script.append("tools-same-index")
    gw = _gateway(store, fake.base_url)
    read = {
        "name": "read",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
    response = gw.stream("read a and b", tools=[read]).collect()
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "read", {"path": "a"}),
        ("call_b", "read", {"path": "b"}),
    ]
