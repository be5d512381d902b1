"""The real embedded model: SmolLM2-135M on llama.cpp. Marked slow (``make test-fast`` skips)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from outcrop import (
    ChecksumError,
    Gateway,
    InvalidRequestError,
    ModelFileError,
    Settings,
    Store,
    UnknownModelError,
)
from outcrop.providers import local
from outcrop.providers.local import PACKAGED_MODELS, LocalProvider, PackagedModel

pytestmark = pytest.mark.slow

MODEL = "local:smollm2-135m"


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(settings=Settings(), store=store)


def _smollm2_path() -> Path:
    return LocalProvider().model_path("smollm2-135m")


def test_the_default_model_answers(gw: Gateway, store: Store):
    response = gw.chat("What is a token?", max_tokens=16, seed=1)
    assert response.model == MODEL
    assert response.text.strip()
    assert response.usage.input_tokens > 5
    assert 0 < response.usage.output_tokens <= 16
    row = store.get(response.id)
    assert (row.status, row.input_tokens, row.output_tokens) == (
        "ok",
        response.usage.input_tokens,
        response.usage.output_tokens,
    )


def test_stream_and_plain_match_exactly(gw: Gateway, store: Store):
    opts = dict(max_tokens=24, seed=7, temperature=0.7)
    plain = gw.chat("Name three colours.", **opts)
    stream = gw.stream("Name three colours.", **opts)
    text = "".join(stream.text())
    assert text == plain.text
    assert stream.response.usage == plain.usage
    rows = store.recent(2)
    assert {r.stream for r in rows} == {True, False}
    assert rows[0].input_tokens == rows[1].input_tokens
    assert rows[0].output_tokens == rows[1].output_tokens


def test_usage_and_text_equal_raw_llama_cpp(gw: Gateway):
    """outcrop's counts are llama-cpp-python's own, not an estimate."""
    prompt = "Write one sentence about rivers."
    ours = gw.chat(prompt, max_tokens=32, seed=3, temperature=0)
    llama = LocalProvider().llama("smollm2-135m")
    raw = llama.create_chat_completion(
        [{"role": "user", "content": prompt}], max_tokens=32, seed=3, temperature=0
    )
    assert ours.usage.input_tokens == raw["usage"]["prompt_tokens"]
    assert ours.usage.output_tokens == raw["usage"]["completion_tokens"]
    assert ours.text == raw["choices"][0]["message"]["content"]


def test_eos_is_not_counted_like_llama_cpp(gw: Gateway):
    llama = LocalProvider().llama("smollm2-135m")
    prompt = "Reply with the single word: yes"
    raw = llama.create_chat_completion(
        [{"role": "user", "content": prompt}], max_tokens=64, seed=1, temperature=0
    )
    ours = gw.chat(prompt, max_tokens=64, seed=1, temperature=0)
    assert raw["choices"][0]["finish_reason"] == "stop"
    assert ours.finish_reason == "stop"
    assert ours.usage.output_tokens == raw["usage"]["completion_tokens"]


def test_stop_sequences_cut_the_answer(gw: Gateway):
    free = gw.chat("Count from one to ten in words.", max_tokens=40, seed=2, temperature=0)
    assert "," in free.text or " " in free.text.strip()
    stop = "," if "," in free.text else " "
    cut = gw.chat(
        "Count from one to ten in words.", max_tokens=40, seed=2, temperature=0, stop=[stop]
    )
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.usage.output_tokens < free.usage.output_tokens


def test_json_schema_output_is_valid(gw: Gateway):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    response = gw.chat(
        "Invent a person.",
        max_tokens=80,
        seed=1,
        response_format={"type": "json_schema", "json_schema": schema},
    )
    data = response.parse_json()
    assert isinstance(data["name"], str)
    assert isinstance(data["age"], int)


def test_a_required_tool_call_is_well_formed(gw: Gateway):
    tool = {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    response = gw.chat(
        "What is the weather in Paris?", tools=[tool], tool_choice="required", max_tokens=60
    )
    assert response.finish_reason == "tool_calls"
    call = response.tool_calls[0]
    assert call.name == "get_weather"
    assert isinstance(call.arguments["city"], str)


def test_closing_a_stream_stops_generation_and_records_partial_usage(gw: Gateway, store: Store):
    stream = gw.stream("Tell me a long story about a dragon.", max_tokens=200, seed=1)
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


def test_count_tokens_uses_the_model_tokenizer(gw: Gateway):
    assert gw.count_tokens("hello world", model=MODEL) == 2
    assert gw.count_tokens("", model=MODEL) == 0


def test_one_instance_per_model_and_safe_from_threads(gw: Gateway):
    provider = LocalProvider()
    assert provider.llama("smollm2-135m") is LocalProvider().llama("smollm2-135m")
    results: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            results.append(gw.chat("Say hi.", max_tokens=8, seed=5, temperature=0).text)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1


def test_any_gguf_path_works(gw: Gateway, tmp_path: Path):
    copy = tmp_path / "my model.gguf"
    shutil.copy(_smollm2_path(), copy)
    response = gw.chat("Hi", model=f"local:{copy}", max_tokens=4)
    assert response.model == f"local:{copy}"
    assert response.usage.output_tokens > 0


def test_bad_model_paths(gw: Gateway, tmp_path: Path):
    with pytest.raises(ModelFileError, match="does not exist"):
        gw.chat("hi", model=f"local:{tmp_path / 'missing.gguf'}")
    text_file = tmp_path / "notes.gguf"
    text_file.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        gw.chat("hi", model=f"local:{text_file}")
    with pytest.raises(ModelFileError, match="not a file"):
        gw.chat("hi", model=f"local:{tmp_path}/")
    with pytest.raises(UnknownModelError, match="Did you mean 'local:smollm2-135m'"):
        gw.chat("hi", model="local:smollm2-13m")


def test_checksum_mismatch_is_an_error_and_nothing_is_loaded(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
):
    real = PACKAGED_MODELS["smollm2-135m"]
    wrong = PackagedModel(**{**real.__dict__, "name": "tampered", "sha256": "0" * 64})
    monkeypatch.setitem(local.PACKAGED_MODELS, "tampered", wrong)
    with pytest.raises(ChecksumError, match="expected sha256 0000"):
        gw.chat("hi", model="local:tampered")


def test_a_damaged_assembled_model_is_reported(gw: Gateway, outcrop_home: Path):
    target = outcrop_home / "models" / "qwen2.5-coder-0.5b.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ChecksumError, match="delete it"):
        gw.chat("hi", model="local:qwen2.5-coder-0.5b")


def test_a_prompt_longer_than_the_context_is_refused(gw: Gateway):
    with pytest.raises(InvalidRequestError, match="context"):
        gw.chat("word " * 5000, max_tokens=4)


def test_rendered_prompt_uses_the_models_template():
    provider = LocalProvider()
    from outcrop import ChatRequest, Message

    text, tokens = provider.render(
        "smollm2-135m", ChatRequest(messages=[Message.system("S"), Message.user("U")])
    )
    assert (
        text
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokens == provider.llama("smollm2-135m").tokenize(text.encode(), special=True)


def test_qwen_is_assembled_once_checked_and_answers(gw: Gateway, outcrop_home: Path):
    """The 0.5B model from its six part packages (installed by the test extra)."""
    provider = LocalProvider()
    path = provider.model_path("qwen2.5-coder-0.5b")
    assert path == outcrop_home / "models" / "qwen2.5-coder-0.5b.gguf"
    assert path.stat().st_size == PACKAGED_MODELS["qwen2.5-coder-0.5b"].size
    assert provider.model_path("qwen2.5-coder-0.5b") == path  # not assembled again
    assert list(path.parent.glob("*.part-*")) == []  # no half-written leftovers
    response = gw.chat(
        "What is the capital of France? Answer with one word.",
        model="local:qwen2.5-coder-0.5b",
        max_tokens=8,
        temperature=0,
    )
    assert "Paris" in response.text


def test_a_second_call_while_a_stream_is_open_in_the_same_thread_is_an_error(gw: Gateway):
    stream = gw.stream("Tell me a story.", max_tokens=50)
    next(stream.text())
    with pytest.raises(InvalidRequestError, match="still open in this thread"):
        gw.chat("hi", max_tokens=2)
    stream.close()
    assert gw.chat("hi", max_tokens=2).usage.output_tokens > 0


def test_an_abandoned_stream_frees_the_model(gw: Gateway):
    stream = gw.stream("Tell me a story.", max_tokens=50)
    next(stream.text())
    del stream  # no close(): the model must still be free for the next caller
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(gw.chat("hi", max_tokens=2).text))
    worker.start()
    worker.join(timeout=30)
    assert done


def test_a_cancelled_tool_call_keeps_its_token_count(gw: Gateway, store: Store):
    tool = {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    }
    stream = gw.stream("Look up the weather.", tools=[tool], tool_choice="required", max_tokens=60)
    # Tool-call output is held back until it parses, so no event reaches the reader; close
    # from another thread after a moment, as a server does when its client disconnects.
    timer = threading.Timer(0.3, stream.close)
    timer.start()
    list(stream)
    timer.join()
    row = store.get(stream.trace_id)
    assert row.status == "cancelled"
    assert row.output_tokens > 0


def test_an_unusable_schema_is_a_clear_error(gw: Gateway):
    bad = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(InvalidRequestError, match="cannot be turned into a grammar"):
        gw.chat("x", response_format={"type": "json_schema", "json_schema": bad})
    with pytest.raises(InvalidRequestError, match="cannot be turned into a grammar"):
        gw.chat("x", tools=[{"name": "f", "parameters": bad}], tool_choice="required")
