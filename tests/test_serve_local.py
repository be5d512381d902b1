"""``outcrop serve`` on the real embedded model: the SDK end to end, a load test, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from outcrop import Gateway, Store
from outcrop.serve.app import ServeConfig, create_app

from .serving import LiveServer

pytestmark = pytest.mark.slow

MODEL = "local:smollm2-135m"


def test_the_sdk_against_the_local_model(store: Store) -> None:
    server = LiveServer(create_app(Gateway(store=store))).start()
    try:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        r = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=12,
            temperature=0,
            seed=1,
        )
        assert r.choices[0].message.content and r.usage is not None
        row = store.recent(limit=1)[0]
        assert (row.input_tokens, row.output_tokens) == (
            r.usage.prompt_tokens,
            r.usage.completion_tokens,
        )  # the server reports the exact usage it records
        schema = {
            "type": "object",
            "properties": {"colour": {"type": "string", "maxLength": 20}},
            "required": ["colour"],
        }
        r = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Name a colour as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
            max_tokens=40,
        )
        assert "colour" in json.loads(r.choices[0].message.content or "")
    finally:
        server.stop()


def test_16_streaming_clients_for_60_s(store: Store) -> None:
    """Only well-formed 429s besides successes; every accepted request is one trace row."""
    config = ServeConfig(queue_max=8, queue_timeout=120)
    server = LiveServer(create_app(Gateway(store=store), config)).start()
    duration = float(os.environ.get("OUTCROP_LOAD_SECONDS", "60"))
    stop_at = time.time() + duration
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=180) as http:
            while time.time() < stop_at:
                body = {
                    "model": MODEL,
                    "stream": True,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"Say a word about {n}."}],
                }
                with http.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
                    if r.status_code == 429:
                        error = json.loads(r.read())["error"]
                        ok = error["type"] == "rate_limit_error" and "retry-after" in r.headers
                        with lock:
                            outcomes["429"] += 1
                            if not ok:
                                problems.append(f"malformed 429: {error} {dict(r.headers)}")
                        time.sleep(min(float(r.headers.get("retry-after", 1)), 2.0))
                        continue
                    lines = [line for line in r.iter_lines() if line]
                    with lock:
                        outcomes[str(r.status_code)] += 1
                        if r.status_code != 200 or lines[-1] != "data: [DONE]":
                            problems.append(f"{r.status_code}: {lines[-3:]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)
    server.stop()
    assert not problems, problems[:3]
    assert outcomes["200"] > 0 and set(outcomes) <= {"200", "429"}
    chat_rows = [r for r in store.recent(limit=10_000) if r.kind == "chat"]
    assert len(chat_rows) == outcomes["200"]
    assert all(r.status == "ok" for r in chat_rows)


def test_sigterm_lets_an_in_flight_stream_finish(tmp_path: Path, outcrop_home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "outcrop", "serve", "--port", str(port)],
        env={**os.environ, "OUTCROP_HOME": str(outcrop_home)},
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {
            "model": MODEL,
            "stream": True,
            "max_tokens": 48,
            "messages": [{"role": "user", "content": "Tell me about the sea."}],
        }
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            assert first.startswith("data: ")
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"  # the stream in flight finished
        # uvicorn finishes in-flight work, then exits by the signal it was sent.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(outcrop_home / "outcrop.db")
    rows = store.recent(limit=5)
    store.close()
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].stream
