"""Two ``outcrop serve`` replicas on loopback sharing PostgreSQL and Redis.

The model tier is a small OpenAI-compatible server in this process (standing in for
vLLM): it writes ``max_tokens`` words (12 at most) and counts a prompt's tokens the way
outcrop estimates them, so what a budget may hold is known exactly. Each test gets its
own PostgreSQL schema (the ``postgres_url`` fixture) and its own Redis key prefix.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from outcrop import Store

REDIS_URL = os.environ.get("OUTCROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MOST = 12  # words the model tier writes when max_tokens does not say fewer


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum((len(str(m.get("content") or "")) + 3) // 4 + 4 for m in messages)


class TinyModel(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint on loopback; counts the calls it served."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TinyHandler)
        self.calls = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _TinyHandler(BaseHTTPRequestHandler):
    server: TinyModel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.server.lock:
            self.server.calls += 1
        n = min(body.get("max_tokens") or MOST, MOST)
        usage = {
            "prompt_tokens": _prompt_tokens(body["messages"]),
            "completion_tokens": n,
            "total_tokens": _prompt_tokens(body["messages"]) + n,
        }
        base = {"id": "c1", "created": 0, "model": body["model"]}
        finish = "length" if n < MOST else "stop"
        if not body.get("stream"):
            data = json.dumps(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(["w"] * n)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "w "}}]}
        ]
        events += [{**chunk, "choices": [{"index": 0, "delta": {"content": "w "}}]}] * (n - 1)
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        events.append({**chunk, "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """The shared state (a PostgreSQL schema, a Redis prefix) and the project folder."""

    def __init__(self, root: Path, database_url: str, model: TinyModel):
        self.root = root
        self.project = root / "project"
        self.project.mkdir()
        (self.project / "outcrop.toml").write_text(
            f'default_model = "vllm:tiny"\n\n[endpoints.vllm]\nbase_url = "{model.base_url}"\n',
            encoding="utf-8",
        )
        self.prefix = f"outcrop-test-{secrets.token_hex(4)}:"
        self.database_url = database_url
        self.replicas: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OUTCROP_RAISE_ERRORS", None)
        env.update(
            OUTCROP_HOME=str(self.root / name),  # nothing shared through the home folder
            OUTCROP_DATABASE_URL=self.database_url,
            OUTCROP_REDIS_URL=REDIS_URL,
            OUTCROP_REDIS_PREFIX=self.prefix,
            PYTHONUNBUFFERED="1",
        )
        return env

    def outcrop(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "outcrop", *args],
            cwd=self.project,
            env=self.env("admin"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self, name: str) -> str:
        port = _free_port()
        log = (self.root / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "outcrop", "serve", "--port", str(port)],
            cwd=self.project,
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.replicas.append(proc)
        return f"http://127.0.0.1:{port}"

    def wait(self, url: str) -> None:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the replica at {url} did not start: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.root.glob("*.log"))

    def stop(self) -> list[int | None]:
        for proc in self.replicas:
            proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
        codes: list[int | None] = []
        for proc in self.replicas:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        self.replicas = []
        while self._logs:
            self._logs.pop().close()
        return codes

    def forget_redis(self) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=self.prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def model() -> Iterator[TinyModel]:
    server = TinyModel()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str, model: TinyModel) -> Iterator[Deployment]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("OUTCROP_TEST_REDIS_REQUIRED") == "1":
            pytest.fail(f"no Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); start it or set OUTCROP_TEST_REDIS_URL")
    d = Deployment(tmp_path, postgres_url, model)
    yield d
    d.stop()
    d.forget_redis()


def _client(url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=30)


HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]  # 7 tokens


def test_two_replicas_enforce_one_budget_and_share_one_dashboard(
    deployment: Deployment, model: TinyModel
) -> None:
    deployment.outcrop("migrate")  # once, before the replicas start
    budget_secret = deployment.outcrop("keys", "create", "budget", "--tokens-per-day", "150")
    budget_secret = budget_secret.strip()
    rpm_secret = deployment.outcrop("keys", "create", "rpm", "--rpm", "3").strip()
    race_secret = deployment.outcrop("keys", "create", "race", "--tokens-per-day", "600").strip()
    a_url, b_url = deployment.start("a"), deployment.start("b")
    deployment.wait(a_url)
    deployment.wait(b_url)
    a, b = _client(a_url, budget_secret), _client(b_url, budget_secret)

    # One budget, alternately through both replicas: A streams, B answers plainly. Each
    # call is 7 prompt tokens and 12 written, until what is left caps max_tokens.
    through_b: list[str] = []
    written: list[int] = []
    for n in range(100):
        try:
            if n % 2 == 0:
                chunks = list(
                    a.chat.completions.create(
                        model="vllm:tiny",
                        messages=HELLO,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                )
                usage = chunks[-1].usage
                assert usage is not None
                written.append(usage.completion_tokens)
            else:
                raw = b.chat.completions.with_raw_response.create(
                    model="vllm:tiny",
                    messages=HELLO,
                )
                through_b.append(raw.headers["x-outcrop-trace-id"])
                reply = raw.parse()
                assert reply.usage is not None
                written.append(reply.usage.completion_tokens)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota", exc
            assert "Budget exhausted: key 'budget' used 150 of its 150 tokens this day" in str(exc)
            break
    # Seven full calls (133 tokens), then one capped to the 10 left: exactly the budget.
    assert written == [MOST] * 7 + [10]
    for client in (a, b):  # refused on either replica now
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="vllm:tiny", messages=HELLO)
        assert refused.value.code == "insufficient_quota"
        assert refused.value.response.status_code == 429

    # One requests-per-minute window: A, B, A pass; the fourth, on B, is refused.
    ra, rb = _client(a_url, rpm_secret), _client(b_url, rpm_secret)
    for client in (ra, rb, ra):
        client.chat.completions.create(model="vllm:tiny", messages=HELLO, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as limited:
        rb.chat.completions.create(model="vllm:tiny", messages=HELLO, max_tokens=1)
    assert limited.value.code == "rate_limit_exceeded"
    assert "3 requests per minute for key 'rpm'" in str(limited.value)
    assert int(limited.value.response.headers["retry-after"]) >= 1

    # Calls racing from 8 threads through both replicas never spend the same tokens twice.
    refusals: list[str] = []
    lock = threading.Lock()

    def race(n: int) -> None:
        client = _client((a_url, b_url)[n % 2], race_secret)
        while True:
            try:
                client.chat.completions.create(
                    model="vllm:tiny",
                    messages=HELLO,
                    max_tokens=MOST,
                )
            except openai.RateLimitError as exc:
                if exc.code == "budget_held":  # the rest is held by calls in flight
                    time.sleep(0.05)
                    continue
                with lock:
                    refusals.append(str(exc.code))
                return

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert refusals == ["insufficient_quota"] * 8

    # Both replicas wrote to the one store: its ledger holds every call, once.
    store = Store(deployment.database_url)
    try:
        keys = {k["name"]: k["id"] for k in store.api_keys()}
        spent, _, calls = store.key_usage(keys["budget"], 0)
        assert (spent, calls) == (150, 8)
        race_spent, _, race_calls = store.key_usage(keys["race"], 0)
        assert 600 <= race_spent <= 600 + 7  # at most one prompt past the budget
        assert model.calls == 8 + 3 + race_calls  # no call reached the model tier unaccounted
    finally:
        store.close()

    # The dashboard on A lists the calls made through B (the monitoring API reads the store).
    listed = httpx.get(
        a_url + "/v1/traces",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {budget_secret}"},
        timeout=30,
    )
    assert listed.status_code == 200
    ids = {row["id"] for row in listed.json()["data"]}
    assert len(through_b) == 4 and set(through_b) <= ids and len(ids) == 8

    # SIGTERM: a graceful exit (uvicorn ends by the signal once it has shut down).
    codes = deployment.stop()
    assert set(codes) <= {0, -signal.SIGTERM}, deployment.logs()
    assert "Traceback" not in deployment.logs()


def test_a_replica_with_an_unreachable_database_stops_at_start_up_with_one_line(
    tmp_path: Path, model: TinyModel
) -> None:
    d = Deployment(tmp_path, "postgresql://postgres@127.0.0.1:1/test", model)
    env = d.env("a")
    result = subprocess.run(
        [sys.executable, "-m", "outcrop", "serve", "--port", str(_free_port())],
        cwd=d.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:") and "127.0.0.1:1" in lines[0]


# -- the guide's load balancers, in front of two replicas ------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "scale-out.md"


def _block(kind: str) -> str:
    (block,) = re.findall(rf"```{kind}\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    return str(block)


def _chat_requests(metrics: str) -> int:
    found = re.findall(
        r'^outcrop_requests_total\{route="/v1/chat/completions",status="200"\} (\d+)',
        metrics,
        flags=re.M,
    )
    return sum(int(n) for n in found)


def test_the_guides_model_tier_settings_load(tmp_path: Path) -> None:
    from outcrop import load_settings

    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    (replicas,) = [b for b in blocks if "[endpoints.vllm]" in b]
    (tmp_path / "outcrop.toml").write_text(replicas, encoding="utf-8")
    settings = load_settings(tmp_path / "outcrop.toml")
    assert settings.endpoints["vllm"].base_url == "http://vllm.internal:8000/v1"
    assert settings.endpoints["bedrock"].api == "bedrock"
    assert settings.endpoints["bedrock"].region == "us-east-1"
    assert settings.fallbacks == ["bedrock:anthropic.claude-3-haiku-20240307-v1:0"]


def test_the_guides_load_balancers_spread_calls_and_drain_a_replica(
    deployment: Deployment, tmp_path: Path
) -> None:
    haproxy, nginx = shutil.which("haproxy"), shutil.which("nginx")
    if haproxy is None or nginx is None:
        pytest.skip("haproxy and nginx are not installed (apt-get install haproxy nginx-light)")
    secret = deployment.outcrop("keys", "create", "app", "--rpm", "600").strip()
    a_url, b_url = deployment.start("a"), deployment.start("b")
    deployment.wait(a_url)
    deployment.wait(b_url)
    a_addr, b_addr = a_url.removeprefix("http://"), b_url.removeprefix("http://")

    ha_port, ng_port = _free_port(), _free_port()
    ha_cfg = tmp_path / "haproxy.cfg"
    ha_cfg.write_text(
        _block("haproxy")
        .replace("10.0.0.11:8000", a_addr)
        .replace("10.0.0.12:8000", b_addr)
        .replace("bind :8000", f"bind 127.0.0.1:{ha_port}"),
        encoding="utf-8",
    )
    check = subprocess.run([haproxy, "-c", "-f", str(ha_cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    ng_dir = tmp_path / "nginx"
    ng_dir.mkdir()
    ng_cfg = ng_dir / "nginx.conf"
    server = (
        _block("nginx")
        .replace("10.0.0.11:8000", a_addr)
        .replace("10.0.0.12:8000", b_addr)
        .replace("listen 8000;", f"listen 127.0.0.1:{ng_port};")
    )
    ng_cfg.write_text(
        f"daemon off;\npid {ng_dir}/nginx.pid;\nerror_log {ng_dir}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\n{server}\n}}\n",
        encoding="utf-8",
    )
    balancers = [
        subprocess.Popen([haproxy, "-f", str(ha_cfg), "-db"], stderr=subprocess.DEVNULL),
        subprocess.Popen([nginx, "-c", str(ng_cfg), "-p", str(ng_dir)], stderr=subprocess.DEVNULL),
    ]
    try:
        ha_url, ng_url = f"http://127.0.0.1:{ha_port}", f"http://127.0.0.1:{ng_port}"
        deployment.wait(ha_url)  # both replicas up behind it
        deployment.wait(ng_url)
        through_ha, through_ng = _client(ha_url, secret), _client(ng_url, secret)
        for _ in range(6):
            through_ha.chat.completions.create(model="vllm:tiny", messages=HELLO, max_tokens=2)
        for _ in range(2):  # streamed through nginx, whose buffering the guide turns off
            chunks = list(
                through_ng.chat.completions.create(
                    model="vllm:tiny", messages=HELLO, max_tokens=3, stream=True
                )
            )
            assert (
                "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w " * 3
            )
        auth = {"Authorization": f"Bearer {secret}"}
        served = [
            _chat_requests(httpx.get(url + "/metrics", headers=auth, timeout=30).text)
            for url in (a_url, b_url)
        ]
        assert sum(served) == 8 and min(served) >= 1  # both replicas took calls

        # Take replica A out: SIGTERM, and it is gone before the health check has noticed
        # (2 s, twice). Calls through HAProxy keep succeeding: a refused connection is
        # sent to the other replica.
        deployment.replicas[0].send_signal(signal.SIGTERM)
        assert deployment.replicas[0].wait(timeout=30) in (0, -signal.SIGTERM)
        for _ in range(6):
            through_ha.chat.completions.create(model="vllm:tiny", messages=HELLO, max_tokens=2)
        listed = httpx.get(b_url + "/v1/traces", params={"limit": 100}, headers=auth, timeout=30)
        assert len(listed.json()["data"]) == 14  # every call, through either balancer, once
    finally:
        for proc in balancers:
            proc.terminate()
            proc.wait(timeout=10)
