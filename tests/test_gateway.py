import asyncio

import pytest

from outcrop import (
    AllModelsFailedError,
    ChatRequest,
    Gateway,
    InvalidRequestError,
    Message,
    ProviderError,
    Settings,
    Store,
    ToolCall,
    UnknownModelError,
)
from outcrop.config import RetrySettings
from outcrop.providers.testing import FunctionModel, TestModel


def test_a_plain_call_leaves_a_trace_row(gateway: Gateway, test_model: TestModel, store: Store):
    test_model.replies.append("Paris is the capital.")
    response = gateway.chat("Capital of France?")
    assert response.text == "Paris is the capital."
    assert response.model == "test"
    row = store.get(response.id)
    assert row is not None
    assert (row.status, row.stream, row.finish_reason) == ("ok", False, "stop")
    assert (row.input_tokens, row.output_tokens) == (3, 4)
    assert row.response == "Paris is the capital."
    assert row.request["messages"][0]["content"][0]["text"] == "Capital of France?"
    assert row.latency_ms is not None and row.latency_ms >= 0
    assert row.cost_usd == 0.0


def test_streamed_and_plain_calls_record_the_same_usage(
    gateway: Gateway, test_model: TestModel, store: Store
):
    test_model.replies.extend(["one two three four", "one two three four"])
    plain = gateway.chat("count please")
    stream = gateway.stream("count please")
    pieces = list(stream.text())
    assert "".join(pieces) == plain.text
    assert len(pieces) == 4
    assert stream.response is not None
    assert stream.response.usage == plain.usage
    rows = {r.stream: r for r in store.recent()}
    assert (rows[True].input_tokens, rows[True].output_tokens) == (
        rows[False].input_tokens,
        rows[False].output_tokens,
    )
    assert rows[True].ttft_ms is not None


def test_a_closed_stream_is_recorded_as_cancelled_with_partial_usage(
    gateway: Gateway, test_model: TestModel, store: Store
):
    test_model.replies.append("a b c d e f g h")
    stream = gateway.stream("go")
    events = [next(stream), next(stream)]
    assert [e.text for e in events] == ["a ", "b "]
    stream.close()
    row = store.get(stream.trace_id)
    assert row.status == "cancelled"
    assert row.output_tokens == 2
    assert row.response == "a b "


def test_a_stream_never_read_is_still_recorded(gateway: Gateway, store: Store):
    with gateway.stream("hello") as stream:
        pass
    assert store.get(stream.trace_id).status == "cancelled"


def test_ctrl_c_inside_the_provider_is_recorded(gateway: Gateway, store: Store):
    def interrupted(request: ChatRequest):
        yield "partial "
        raise KeyboardInterrupt

    gateway.providers["fn"] = FunctionModel(interrupted)
    stream = gateway.stream("hi", model="fn")
    with pytest.raises(KeyboardInterrupt):
        list(stream)
    row = store.get(stream.trace_id)
    assert row.status == "cancelled"
    assert row.output_tokens == 1
    assert "Ctrl-C" in row.error


def test_retries_on_rate_limits_with_backoff(store: Store):
    sleeps: list[float] = []
    model = TestModel([ProviderError("slow down", status_code=429), "fine"])
    gw = Gateway(
        settings=Settings(default_model="test"),
        store=store,
        providers={"test": model},
        sleep=sleeps.append,
    )
    response = gw.chat("hi")
    assert response.text == "fine"
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5
    row = store.get(response.id)
    assert [a["status_code"] for a in row.attempts] == [429, None]


def test_retry_after_header_is_honoured(store: Store):
    sleeps: list[float] = []
    err = ProviderError("busy", status_code=503, headers={"retry-after": "2"})
    gw = Gateway(
        settings=Settings(default_model="test"),
        store=store,
        providers={"test": TestModel([err, "ok"])},
        sleep=sleeps.append,
    )
    gw.chat("hi")
    assert sleeps == [2.0]


def test_client_errors_are_not_retried(gateway: Gateway, test_model: TestModel, store: Store):
    test_model.replies.extend([ProviderError("bad request", status_code=400), "never"])
    with pytest.raises(ProviderError, match="bad request"):
        gateway.chat("hi")
    assert test_model.replies[0] == "never"
    row = store.recent(1)[0]
    assert row.status == "error"
    assert "bad request" in row.error


def test_fallback_chain_records_which_model_answered(store: Store):
    broken = TestModel([ProviderError("down", status_code=500)] * 3)
    backup = TestModel(["from the backup"])
    gw = Gateway(
        settings=Settings(default_model="main", fallbacks=["backup"]),
        store=store,
        providers={"main": broken, "backup": backup},
        sleep=lambda s: None,
    )
    response = gw.chat("hi")
    assert response.model == "backup"
    assert response.text == "from the backup"
    row = store.get(response.id)
    assert row.requested_model == "main"
    assert row.model == "backup"
    assert [a["model"] for a in row.attempts] == ["main", "main", "main", "backup"]


def test_every_model_failing_raises_with_each_error(store: Store):
    gw = Gateway(
        settings=Settings(default_model="a", fallbacks=["b"], retry=RetrySettings(max_attempts=1)),
        store=store,
        providers={
            "a": TestModel([ProviderError("a broke", status_code=500)]),
            "b": TestModel([ProviderError("b broke", status_code=502)]),
        },
    )
    with pytest.raises(AllModelsFailedError) as info:
        gw.chat("hi")
    assert set(info.value.errors) == {"a", "b"}
    assert store.recent(1)[0].status == "error"


def test_no_retry_once_part_of_the_answer_is_out(store: Store):
    def flaky(request: ChatRequest):
        yield "half "
        raise ProviderError("connection reset", status_code=503)

    fn = FunctionModel(flaky)
    gw = Gateway(
        settings=Settings(default_model="fn", fallbacks=["test"]),
        store=store,
        providers={"fn": fn, "test": TestModel()},
        sleep=lambda s: None,
    )
    with pytest.raises(ProviderError, match="connection reset"):
        gw.chat("hi")
    assert len(fn.requests) == 1


def test_unknown_model_suggests_the_closest(gateway: Gateway, store: Store):
    with pytest.raises(UnknownModelError) as info:
        gateway.chat("hi", model="local:smollm2")
    assert info.value.suggestions == ["local:smollm2-135m"]
    with pytest.raises(UnknownModelError) as info:
        gateway.chat("hi", model="smollm2-135m")
    assert "local:smollm2-135m" in info.value.suggestions
    with pytest.raises(UnknownModelError, match="provider:model"):
        gateway.chat("hi", model="nothing-like-it")
    assert store.recent(1)[0].status == "error"


def test_aliases_resolve_and_loops_are_caught(store: Store):
    gw = Gateway(
        settings=Settings(default_model="fast", aliases={"fast": "quick", "quick": "test"}),
        store=store,
        providers={"test": TestModel(["hey"])},
    )
    assert gw.chat("hi").model == "test"
    loop = Gateway(
        settings=Settings(default_model="a", aliases={"a": "b", "b": "a"}),
        store=store,
        providers={"test": TestModel()},
    )
    with pytest.raises(InvalidRequestError, match="loop"):
        loop.chat("hi")


def test_bad_options_name_the_field(gateway: Gateway):
    with pytest.raises(InvalidRequestError) as info:
        gateway.chat("hi", temperature=-1)
    assert info.value.field == "temperature"
    with pytest.raises(InvalidRequestError) as info:
        gateway.chat("hi", max_tokens=0)
    assert info.value.field == "max_tokens"
    with pytest.raises(InvalidRequestError, match="empty"):
        gateway.chat("")


def test_system_prompt_and_message_lists(gateway: Gateway, test_model: TestModel):
    gateway.chat("hi", system="be brief")
    gateway.chat([Message.user("a"), Message.assistant("b"), Message.user("c")])
    first, second = test_model.requests
    assert [m.role for m in first.messages] == ["system", "user"]
    assert [m.text for m in second.messages] == ["a", "b", "c"]


def test_tool_calls_come_back_and_are_recorded(
    gateway: Gateway, test_model: TestModel, store: Store
):
    test_model.replies.append(ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2}))
    response = gateway.chat("1+2?", tools=[{"name": "add"}])
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls[0].arguments == {"a": 1, "b": 2}
    assert '"name":"add"' in store.get(response.id).response


def test_timeout_stops_a_slow_model(store: Store):
    def slow(request: ChatRequest):
        import time

        for _ in range(5):
            time.sleep(0.02)
            yield "x "

    gw = Gateway(
        settings=Settings(default_model="fn", retry=RetrySettings(timeout_s=0.01, max_attempts=1)),
        store=store,
        providers={"fn": FunctionModel(slow)},
    )
    from outcrop import ProviderTimeoutError

    with pytest.raises(ProviderTimeoutError, match="timeout_s"):
        gw.chat("hi")


def test_async_and_sync_agree(gateway: Gateway, test_model: TestModel):
    test_model.replies.extend(["same answer", "same answer"])
    sync = gateway.chat("q", seed=1)
    asyn = asyncio.run(gateway.achat("q", seed=1))
    assert (asyn.text, asyn.usage, asyn.model) == (sync.text, sync.usage, sync.model)


def test_a_dropped_stream_is_recorded(gateway: Gateway, store: Store):
    stream = gateway.stream("never read")
    trace_id = stream.trace_id
    del stream
    assert store.get(trace_id).status == "cancelled"


def test_collect_after_close_says_so(gateway: Gateway):
    from outcrop import StreamCancelled

    stream = gateway.stream("hi")
    stream.close()
    with pytest.raises(StreamCancelled):
        stream.collect()


def _slow_first(delays: list[float]):
    def fn(request: ChatRequest):
        import time

        time.sleep(delays.pop(0) if delays else 0)
        yield "answer"

    return FunctionModel(fn)


def test_a_timeout_before_the_first_token_is_retried(store: Store):
    model = _slow_first([0.2, 0.0])
    gw = Gateway(
        settings=Settings(default_model="fn", retry=RetrySettings(timeout_s=0.1, max_attempts=2)),
        store=store,
        providers={"fn": model},
        sleep=lambda s: None,
    )
    response = gw.chat("hi")
    assert response.text == "answer"
    row = store.get(response.id)
    assert [a["error"] is None for a in row.attempts] == [False, True]
    assert "did not finish within" in row.attempts[0]["error"]


def test_a_timeout_falls_back(store: Store):
    gw = Gateway(
        settings=Settings(
            default_model="slow",
            fallbacks=["test"],
            retry=RetrySettings(timeout_s=0.05, max_attempts=1),
        ),
        store=store,
        providers={"slow": _slow_first([0.2]), "test": TestModel(["backup"])},
    )
    response = gw.chat("hi")
    assert (response.model, response.text) == ("test", "backup")


def test_a_slow_reader_is_not_a_slow_model(store: Store):
    import time

    gw = Gateway(
        settings=Settings(default_model="test", retry=RetrySettings(timeout_s=0.05)),
        store=store,
        providers={"test": TestModel(["a b c d"])},
    )
    stream = gw.stream("hi")
    for _ in stream:
        time.sleep(0.03)  # the reader dawdles; the model was quick
    assert stream.response is not None
    assert store.get(stream.trace_id).status == "ok"


def test_a_broken_fallback_setting_does_not_break_calls(store: Store):
    gw = Gateway(
        settings=Settings(default_model="test", fallbacks=["local:/no/such/model.gguf"]),
        store=store,
        providers={"test": TestModel(["fine"])},
    )
    assert gw.chat("hi").text == "fine"
    failing = Gateway(
        settings=Settings(
            default_model="a",
            fallbacks=["local:/no/such/model.gguf", "b"],
            retry=RetrySettings(max_attempts=1),
        ),
        store=store,
        providers={
            "a": TestModel([ProviderError("down", status_code=500)]),
            "b": TestModel(["from b"]),
        },
    )
    response = failing.chat("hi")
    assert response.model == "b"
    attempts = store.get(response.id).attempts
    assert [a["model"] for a in attempts] == ["a", "local:/no/such/model.gguf", "b"]
    assert "does not exist" in attempts[1]["error"]


@pytest.mark.parametrize("header", ["-1", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_odd_retry_after_values_fall_back_to_backoff(store: Store, header: str):
    sleeps: list[float] = []
    err = ProviderError("busy", status_code=429, headers={"retry-after": header})
    gw = Gateway(
        settings=Settings(default_model="test"),
        store=store,
        providers={"test": TestModel([err, "ok"])},
        sleep=sleeps.append,
    )
    assert gw.chat("hi").text == "ok"
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_close_from_another_thread_stops_the_reader(store: Store):
    import threading
    import time

    def endless(request: ChatRequest):
        while True:
            time.sleep(0.005)
            yield "more "

    gw = Gateway(
        settings=Settings(default_model="fn"), store=store, providers={"fn": FunctionModel(endless)}
    )
    stream = gw.stream("go")
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(stream.text()))
    reader.start()
    time.sleep(0.05)
    stream.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    row = store.get(stream.trace_id)
    assert row.status == "cancelled"
    assert row.output_tokens == len(seen) > 0


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_trace_ids_are_time_ordered_unique_and_differ_after_a_fork():
    import os

    from outcrop.gateway import new_id

    ids = [new_id() for _ in range(5000)]  # past one 4 KiB pool of random bytes
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]  # milliseconds first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not repeat the parent's pool
        try:
            os.write(write, "".join(new_id()[12:] for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        child = f.read()
    parent = "".join(new_id()[12:] for _ in range(50))
    assert len(child) == len(parent) == 600
    assert child != parent
