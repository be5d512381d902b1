"""Continuous batching on the local model: the engine, and the provider's use of it.

The real-model tests (marked slow) check that a request through the batch engine is the
same request as on the exclusive path: same tokens at temperature 0, same text, usage,
stop strings and finish reasons, alone or beside others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from outcrop import (
    ChatRequest,
    Gateway,
    InvalidRequestError,
    Message,
    ProviderError,
    Settings,
    Store,
)
from outcrop.providers.batching import BatchEngine, Handle
from outcrop.providers.local import LocalProvider

MODEL = "smollm2-135m"
PROMPTS = [
    "Write one sentence about rivers.",
    "Name three colours.",
    "What is a token?",
    "Why is the sky blue?",
    "Count from one to ten in words.",
]
slow = pytest.mark.slow


# -- without the model ---------------------------------------------------------


def test_batching_is_off_by_default_and_says_how_to_turn_it_on():
    provider = LocalProvider()
    assert provider.batching == 0
    with pytest.raises(InvalidRequestError, match=r"LocalProvider\(batching=8\)"):
        provider.batch_engine(MODEL)


def test_batching_slots_must_not_be_negative():
    with pytest.raises(InvalidRequestError, match="0 \\(off\\) or more"):
        LocalProvider(batching=-1)
    with pytest.raises(InvalidRequestError, match="16 tokens or more"):
        LocalProvider().enable_batching(8, context=8)
    provider = LocalProvider(batching=4)
    assert provider.batching == 4
    provider.enable_batching(0)
    assert provider.batching == 0


# -- helpers -------------------------------------------------------------------


@pytest.fixture
def loaded() -> Any:
    return LocalProvider().load(MODEL)


@pytest.fixture
def engine(loaded: Any) -> Iterator[BatchEngine]:
    with BatchEngine(loaded.llama, slots=4, n_ctx_seq=512) as e:
        yield e


@pytest.fixture
def batched() -> Iterator[LocalProvider]:
    provider = LocalProvider(batching=4)
    yield provider
    provider.close()


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(settings=Settings(), store=store)


@pytest.fixture
def bgw(store: Store, batched: LocalProvider) -> Gateway:
    return Gateway(settings=Settings(), store=store, providers={"local": batched})


def _tokens(loaded: Any, prompt: str) -> list[int]:
    _, tokens = LocalProvider()._render(loaded, ChatRequest(messages=[Message.user(prompt)]))
    return tokens


def _solo(loaded: Any, tokens: list[int], max_tokens: int) -> list[int]:
    """Greedy tokens on the exclusive path's own context (``Llama.generate``)."""
    import llama_cpp

    llama = loaded.llama
    out: list[int] = []
    with loaded.lock:
        generator = llama.generate(tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.0)
        for token in generator:
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token) or len(out) == max_tokens:
                break
            out.append(token)
        generator.close()
    return out


def _read_all(handles: list[Handle], timeout: float = 120) -> list[list[int]]:
    """Read every handle in its own thread, as concurrent clients do."""
    results: list[list[int] | BaseException] = [[] for _ in handles]

    def read(i: int) -> None:
        try:
            results[i] = list(handles[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a handle never ended"
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if not isinstance(r, BaseException)]


# -- the engine ----------------------------------------------------------------


@slow
def test_one_greedy_request_equals_the_exclusive_path(loaded: Any, engine: BatchEngine):
    tokens = _tokens(loaded, PROMPTS[0])
    expected = _solo(loaded, tokens, 32)
    handle = engine.submit(tokens, max_tokens=32, temperature=0)
    assert list(handle) == expected
    assert handle.prompt_tokens == len(tokens)
    assert handle.generated == handle.delivered == len(expected)
    assert handle.finish_reason == ("length" if len(expected) == 32 else "stop")


@slow
def test_concurrent_sequences_do_not_see_each_other(loaded: Any, engine: BatchEngine):
    prompts = [_tokens(loaded, p) for p in PROMPTS[:4]]
    expected = [_solo(loaded, t, 32) for t in prompts]
    handles = [engine.submit(t, max_tokens=32, temperature=0) for t in prompts]
    assert _read_all(handles) == expected
    assert [h.generated for h in handles] == [len(e) for e in expected]


@slow
@pytest.mark.parametrize("chunk", [2, 3, 7])
def test_prompts_read_in_pieces_give_the_exclusive_paths_answer(loaded: Any, chunk: int):
    prompts = [_tokens(loaded, p) for p in PROMPTS[:3]]
    expected = [_solo(loaded, t, 16) for t in prompts]
    with BatchEngine(loaded.llama, slots=3, n_ctx_seq=256, prefill_chunk=chunk) as engine:
        handles = [engine.submit(t, max_tokens=16, temperature=0) for t in prompts]
        assert _read_all(handles) == expected


@slow
def test_a_slot_reuses_the_prompt_beginning_it_holds(loaded: Any):
    first, second = (_tokens(loaded, p) for p in PROMPTS[:2])
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > 10  # the template's system prompt
    with BatchEngine(loaded.llama, slots=1, n_ctx_seq=256) as engine:
        for tokens, cached in ((first, 0), (second, shared), (second, len(second) - 1)):
            handle = engine.submit(tokens, max_tokens=12, temperature=0)
            assert list(handle) == _solo(loaded, tokens, 12)
            assert (handle.cached_tokens, handle.prompt_tokens) == (cached, len(tokens))


@slow
def test_more_requests_than_slots_wait_and_all_finish(loaded: Any):
    prompts = [_tokens(loaded, p) for p in PROMPTS]
    expected = [_solo(loaded, t, 12) for t in prompts]
    with BatchEngine(loaded.llama, slots=2, n_ctx_seq=256) as engine:
        handles = [engine.submit(t, max_tokens=12, temperature=0) for t in prompts]
        assert engine.waiting >= 1  # five requests, two slots
        assert _read_all(handles) == expected
        assert (engine.active, engine.waiting) == (0, 0)


@slow
def test_max_tokens_and_stop_token_ids(loaded: Any, engine: BatchEngine):
    tokens = _tokens(loaded, PROMPTS[4])
    free = _solo(loaded, tokens, 20)
    handle = engine.submit(tokens, max_tokens=5, temperature=0)
    assert list(handle) == free[:5]
    assert (handle.generated, handle.finish_reason) == (5, "length")
    stopper = free[3]
    cut = free[: free.index(stopper)]
    handle = engine.submit(tokens, max_tokens=20, temperature=0, stop_token_ids=[stopper])
    assert list(handle) == cut  # the stop token is neither yielded nor counted
    assert (handle.generated, handle.finish_reason) == (len(cut), "stop")


@slow
def test_cancel_mid_stream_frees_the_slot_and_counts_partial_tokens(loaded: Any):
    tokens = _tokens(loaded, "Tell me a long story about a dragon.")
    with BatchEngine(loaded.llama, slots=1, n_ctx_seq=512) as engine:
        long = engine.submit(tokens, max_tokens=300, temperature=0.7, seed=1)
        queued = engine.submit(tokens, max_tokens=3, temperature=0)
        dropped = engine.submit(tokens, max_tokens=3, temperature=0)
        read = [next(long) for _ in range(5)]
        assert len(read) == 5
        dropped.cancel()  # still waiting: leaves the queue at once
        assert (dropped.finish_reason, dropped.generated, list(dropped)) == ("cancelled", 0, [])
        long.cancel()
        rest = list(long)  # what was made before the cancel, then the end
        assert long.finish_reason == "cancelled"
        assert 5 <= long.generated == 5 + len(rest) < 300
        assert len(_read_all([queued])[0]) == queued.generated > 0  # it got the slot
        long.cancel()  # a second cancel is harmless


@slow
def test_seeded_sampling_equals_the_exclusive_path(gw: Gateway, bgw: Gateway):
    opts: dict[str, Any] = dict(max_tokens=24, seed=7, temperature=0.7)
    assert bgw.chat(PROMPTS[1], **opts).text == gw.chat(PROMPTS[1], **opts).text


# -- errors --------------------------------------------------------------------


@slow
def test_bad_engine_settings_are_refused(loaded: Any):
    with pytest.raises(InvalidRequestError, match="slots must be at least 1"):
        BatchEngine(loaded.llama, slots=0)
    with pytest.raises(InvalidRequestError, match="prefill_chunk must be at least 2"):
        BatchEngine(loaded.llama, prefill_chunk=1)


@slow
def test_bad_requests_are_refused_at_submit(loaded: Any, engine: BatchEngine):
    with pytest.raises(InvalidRequestError, match="no tokens"):
        engine.submit([], max_tokens=4)
    with pytest.raises(InvalidRequestError, match="at least 1"):
        engine.submit([1, 2], max_tokens=0)
    with pytest.raises(InvalidRequestError, match="do not fit in the 512 tokens"):
        engine.submit([1] * 500, max_tokens=20)


@slow
def test_a_failed_decode_ends_its_requests_with_an_error_and_the_engine_goes_on(
    loaded: Any, engine: BatchEngine, monkeypatch: pytest.MonkeyPatch
):
    import llama_cpp

    tokens = _tokens(loaded, PROMPTS[2])
    real = llama_cpp.llama_decode
    monkeypatch.setattr(llama_cpp, "llama_decode", lambda ctx, batch: -3)
    handle = engine.submit(tokens, max_tokens=8, temperature=0)
    with pytest.raises(ProviderError, match=r"decode failed \(code -3\)"):
        list(handle)
    assert handle.finish_reason == "error"
    monkeypatch.setattr(llama_cpp, "llama_decode", real)
    assert list(engine.submit(tokens, max_tokens=8, temperature=0)) == _solo(loaded, tokens, 8)


@slow
def test_a_crash_in_the_engine_thread_reaches_every_waiting_reader(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
):
    import llama_cpp

    def boom(*args: object) -> int:
        raise RuntimeError("sampler exploded")

    tokens = _tokens(loaded, PROMPTS[0])
    with BatchEngine(loaded.llama, slots=1, n_ctx_seq=256) as engine:
        monkeypatch.setattr(llama_cpp, "llama_sampler_sample", boom)
        handles = [engine.submit(tokens, max_tokens=8, temperature=0) for _ in range(3)]
        for handle in handles:  # the running one and the two waiting behind it
            with pytest.raises(ProviderError, match="sampler exploded"):
                list(handle)
        assert engine.closed
        with pytest.raises(ProviderError, match="stopped after an error"):
            engine.submit(tokens, max_tokens=2)


@slow
def test_closing_the_engine_ends_unfinished_requests(loaded: Any):
    tokens = _tokens(loaded, PROMPTS[0])
    engine = BatchEngine(loaded.llama, slots=1, n_ctx_seq=512)
    running = engine.submit(tokens, max_tokens=400, temperature=0)  # 25 tokens at least
    waiting = engine.submit(tokens, max_tokens=4)
    next(running)
    engine.close()
    engine.close()  # twice is fine
    for handle in (running, waiting):
        with pytest.raises(ProviderError, match="closed before this request finished"):
            list(handle)
    with pytest.raises(ProviderError, match="closed"):
        engine.submit(tokens, max_tokens=2)


# -- through the provider and the gateway --------------------------------------


@slow
def test_the_gateway_answers_the_same_with_batching_on(gw: Gateway, bgw: Gateway, store: Store):
    for prompt in PROMPTS[:2]:
        ours = bgw.chat(prompt, max_tokens=32, temperature=0)
        theirs = gw.chat(prompt, max_tokens=32, temperature=0)
        assert (ours.text, ours.usage, ours.finish_reason) == (
            theirs.text,
            theirs.usage,
            theirs.finish_reason,
        )
        row = store.get(ours.id)
        assert (row.input_tokens, row.output_tokens) == (
            ours.usage.input_tokens,
            ours.usage.output_tokens,
        )


@slow
def test_usage_and_text_equal_raw_llama_cpp(bgw: Gateway, batched: LocalProvider):
    prompt = "Reply with the single word: yes"
    ours = bgw.chat(prompt, max_tokens=64, temperature=0)
    raw = batched.llama(MODEL).create_chat_completion(
        [{"role": "user", "content": prompt}], max_tokens=64, temperature=0
    )
    assert ours.text == raw["choices"][0]["message"]["content"]
    assert ours.finish_reason == raw["choices"][0]["finish_reason"] == "stop"
    assert ours.usage.input_tokens == raw["usage"]["prompt_tokens"]
    assert ours.usage.output_tokens == raw["usage"]["completion_tokens"]


@slow
def test_stop_strings_and_max_tokens_as_on_the_exclusive_path(gw: Gateway, bgw: Gateway):
    opts: dict[str, Any] = dict(max_tokens=40, temperature=0)
    free = gw.chat(PROMPTS[4], **opts)
    stop = "," if "," in free.text else " "
    for o in ({"stop": [stop]}, {"stop": ["ten", "six"]}, {"max_tokens": 7}):
        ours = bgw.chat(PROMPTS[4], **{**opts, **o})
        theirs = gw.chat(PROMPTS[4], **{**opts, **o})
        assert (ours.text, ours.usage, ours.finish_reason) == (
            theirs.text,
            theirs.usage,
            theirs.finish_reason,
        )
    assert bgw.chat(PROMPTS[4], **{**opts, "stop": [stop]}).finish_reason == "stop"
    assert bgw.chat(PROMPTS[4], **{**opts, "max_tokens": 7}).finish_reason == "length"


@slow
def test_concurrent_streams_through_the_gateway_equal_their_solo_answers(gw: Gateway, bgw: Gateway):
    solo = [gw.chat(p, max_tokens=24, temperature=0) for p in PROMPTS[:4]]
    streams = [bgw.stream(p, max_tokens=24, temperature=0) for p in PROMPTS[:4]]
    texts = ["" for _ in streams]

    def read(i: int) -> None:
        texts[i] = "".join(streams[i].text())

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert texts == [s.text for s in solo]
    assert [s.response.usage for s in streams if s.response] == [s.usage for s in solo]


@slow
def test_closing_a_batched_stream_records_partial_usage(bgw: Gateway, store: Store):
    stream = bgw.stream("Tell me a long story about a dragon.", max_tokens=200, seed=1)
    pieces = []
    for piece in stream.text():
        pieces.append(piece)
        if len(pieces) == 5:
            break
    stream.close()
    row = store.get(stream.trace_id)
    assert row.status == "cancelled"
    assert 5 <= row.output_tokens < 200
    assert row.response == "".join(pieces)


@slow
def test_grammar_requests_keep_the_exclusive_path(bgw: Gateway, batched: LocalProvider):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    response = bgw.chat(
        "Invent a person.",
        max_tokens=40,
        seed=1,
        response_format={"type": "json_schema", "json_schema": schema},
    )
    assert isinstance(response.parse_json()["name"], str)
    assert batched._engines == {}  # no engine was needed


@slow
def test_requests_longer_than_a_small_batch_context_take_the_exclusive_path(
    gw: Gateway, store: Store
):
    provider = LocalProvider()
    provider.enable_batching(2, context=64)
    bgw = Gateway(settings=Settings(), store=store, providers={"local": provider})
    try:
        engine = provider.batch_engine(MODEL)
        assert engine.n_ctx_seq == 64
        short = bgw.chat(PROMPTS[2], max_tokens=8, temperature=0)  # ~35 + 8 tokens
        assert engine.submitted == 1
        long = bgw.chat(PROMPTS[2], max_tokens=40, temperature=0)
        assert engine.submitted == 1  # served on the exclusive path
        for ours, n in ((short, 8), (long, 40)):
            theirs = gw.chat(PROMPTS[2], max_tokens=n, temperature=0)
            assert (ours.text, ours.usage) == (theirs.text, theirs.usage)
    finally:
        provider.close()


@slow
def test_a_stopped_engine_is_replaced(batched: LocalProvider, bgw: Gateway):
    first = batched.batch_engine(MODEL)
    assert batched.batch_engine(MODEL) is first
    first.close()
    assert bgw.chat("Hi", max_tokens=3).usage.output_tokens > 0
    assert batched.batch_engine(MODEL) is not first


@slow
def test_a_prompt_longer_than_the_context_is_refused_with_batching_on(bgw: Gateway):
    with pytest.raises(InvalidRequestError, match="context"):
        bgw.chat("word " * 5000, max_tokens=4)
