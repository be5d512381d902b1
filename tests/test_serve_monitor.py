"""The monitoring API: traces, feedback, summaries over time, the prompt builder's render."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.providers.testing import TestModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import create_key

from .serving import LiveServer


@pytest.fixture
def live(store: Store) -> Iterator[LiveServer]:
    gw = Gateway(
        settings=Settings(default_model="test"),
        store=store,
        providers={"test": TestModel(default="It is Paris.")},
    )
    server = LiveServer(create_app(gw)).start()
    yield server
    server.stop()


def _chat(live: LiveServer, text: str) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "test", "messages": [{"role": "user", "content": text}]},
    )


def test_traces_feedback_and_the_trace_page_data(live: LiveServer, store: Store) -> None:
    r = _chat(live, "Capital of France?")
    trace_id = r.headers["x-outcrop-trace-id"]
    assert r.json()["id"] == f"chatcmpl-{trace_id}"
    listed = httpx.get(live.url + "/v1/traces?limit=5").json()["data"]
    assert listed[0]["id"] == trace_id and listed[0]["feedback"] is None
    ok = httpx.post(
        live.url + f"/v1/traces/{trace_id}/feedback", json={"rating": "up", "comment": "good"}
    )
    assert ok.status_code == 200 and ok.json()["ok"] is True
    detail = httpx.get(live.url + f"/v1/traces/{trace_id}").json()
    assert detail["feedback"] == {"rating": "up", "comment": "good"}
    assert detail["trace"]["response"] == "It is Paris."
    assert store.feedback([trace_id])[trace_id]["rating"] == "up"

    missing = httpx.post(live.url + "/v1/traces/nope/feedback", json={"rating": "up"})
    assert missing.status_code == 404 and "No trace 'nope'" in missing.json()["error"]["message"]
    bad = httpx.post(live.url + f"/v1/traces/{trace_id}/feedback", json={"rating": "meh"})
    assert bad.status_code == 400 and "rating" in bad.json()["error"]["message"]
    assert store.feedback([trace_id])[trace_id]["rating"] == "up"  # nothing lost

    streamed = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "test", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    assert streamed.headers["x-outcrop-trace-id"] in streamed.text


def test_summary_over_time_and_bad_ranges(live: LiveServer) -> None:
    for text in ("a", "b", "c"):
        _chat(live, text)
    summary = httpx.get(live.url + "/v1/metrics/summary?hours=1&bucket=600").json()
    assert len(summary["buckets"]) == 6
    assert summary["totals"]["requests"] == 3 and summary["totals"]["errors"] == 0
    assert sum(b["requests"] for b in summary["buckets"]) == 3
    assert summary["totals"]["latency_p50_ms"] is not None
    filtered = httpx.get(live.url + "/v1/metrics/summary?hours=1&model=other").json()
    assert filtered["totals"]["requests"] == 0
    for query, text in (("hours=0", "hours must be above 0"), ("hours=1&bucket=5", "bucket")):
        r = httpx.get(live.url + f"/v1/metrics/summary?{query}")
        assert r.status_code == 400 and text in r.json()["error"]["message"]


def test_prompt_render_for_the_builder(live: LiveServer) -> None:
    body = {
        "prompt": {
            "persona": "a geography teacher",
            "query": "What is the capital of {{ country }}?",
            "constraints": ["One word."],
        },
        "variables": {"country": "Peru"},
    }
    r = httpx.post(live.url + "/v1/prompts/render", json=body).json()
    assert r["messages"][-1]["content"] == "What is the capital of Peru?"
    assert "geography teacher" in r["messages"][0]["content"] and r["tokens"] > 0
    bad = httpx.post(live.url + "/v1/prompts/render", json={"prompt": {"tone": "x"}})
    assert bad.status_code == 400 and "query" in bad.json()["error"]["message"]


def test_a_key_sees_only_its_own_traces(live: LiveServer, store: Store) -> None:
    _, mine = create_key(store, "mine")
    _, other = create_key(store, "other")
    httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "test", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {mine}"},
    )
    seen = httpx.get(live.url + "/v1/traces", headers={"Authorization": f"Bearer {other}"})
    assert seen.json()["data"] == []
    assert httpx.get(live.url + "/v1/traces").status_code == 401
