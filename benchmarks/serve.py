"""`outcrop serve` against llama.cpp's own server, and outcrop's gateway overhead vs LiteLLM.

Part 1, the local model. ``outcrop serve`` and ``python -m llama_cpp.server`` run side by
side on the same GGUF (the packaged SmolLM2-135M), with the same threads, context size and
batch size, ``logits_all`` off on both (outcrop's setting; the peer's default is on), and the
peer's ``interrupt_requests`` off so that every request it answers runs to the end, as
outcrop's do. One client (httpx2, no SDK parsing in the way) sends the same short prompts
(temperature 0, ``max_tokens`` 32) at 1 and 8 concurrent clients, plain and streamed. The
8 cells (server × clients × mode) run in slices of ``--duration`` seconds, alternating
which server goes first, for ``--rounds`` rounds, so machine noise hits both. Per cell:
completed requests/s, p50/p95 latency, time to first token (streamed), tokens per request,
errors (count and the first message). A slice stops starting requests at its deadline and
waits up to ``--drain`` seconds for those in flight, which count: requests/s is completed /
time to the last answer (requests still running then are cut off and reported as
unfinished). Each side's answers are checked against the other's: greedy, so identical.
Each cell also reports the server process's CPU time per answer, which machine noise
moves far less than requests/s on a shared machine.

llama.cpp is built with OpenMP here; its worker threads spin between steps by default.
``--omp-passive`` runs both model servers with ``OMP_WAIT_POLICY=PASSIVE`` (they sleep).

Part 2, gateway overhead. outcrop's app on a test double that answers at once
(``FunctionModel``, started from this file with ``--role echo``), LiteLLM's proxy in front
of a mock OpenAI backend (``--role mock``), the mock alone (for scale), and ``outcrop serve``
proxying the same mock (the like-for-like figure: both proxies make the same upstream
hop; outcrop's OpenAI provider streams upstream, so the mock answers SSE when asked),
plain requests at 8 and 32 concurrent clients. LiteLLM lives in its own venv
(``--litellm``, default /tmp/litellm-venv/bin/litellm) so the project's stays clean:

    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'

Without it the part reports outcrop's figures and the issue's reference for LiteLLM.

Prints one JSON line. Usage:

    .venv/bin/python benchmarks/serve.py [--duration 6] [--rounds 2] [--batch-slots 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

BIN = Path(sys.executable).parent  # the project's venv: outcrop, python

PROMPTS = [
    "What is a token?",
    "Name three primary colours.",
    "Write one sentence about the moon.",
    "What does a compiler do?",
    "Give me a synonym for happy.",
    "Why is the sky blue?",
    "Describe a cat in five words.",
    "What is 12 times 7?",
    "Suggest a name for a bakery.",
    "What is the capital of Italy?",
    "Explain recursion briefly.",
    "List two uses of a hammer.",
    "What is photosynthesis?",
    "Write a haiku about rain.",
    "How many legs does a spider have?",
    "What is a database index?",
]

# The targets, and its reference figures for LiteLLM (when it cannot run here).
TARGETS = {
    "throughput_ratio_min": 1.5,  # outcrop / llama.cpp requests/s, at 1 and at 8 clients
    "p95_ratio_max": 1.0,  # outcrop / llama.cpp p95 latency
    "errors_8_streams": 0,
    "gateway_vs_litellm_min": 10.0,  # outcrop / LiteLLM requests/s
}
LITELLM_REFERENCE: dict[str, Any] = {"litellm_rps_8_clients": [75, 94], "mock_alone_rps": 10_000}

MOCK_BODY = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()

_MOCK_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-mock",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "mock",
}
_MOCK_PARTS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
]
MOCK_SSE = (
    b"".join(
        b"data: " + json.dumps({**_MOCK_CHUNK, **part}).encode() + b"\n\n" for part in _MOCK_PARTS
    )
    + b"data: [DONE]\n\n"
)

# -- child roles: the test-double app and the mock backend ------------------------------


def role_echo(port: int) -> None:
    """outcrop's app on a test double that answers at once: the gateway's own overhead."""
    import uvicorn

    from outcrop import Gateway, Settings
    from outcrop.providers.testing import FunctionModel
    from outcrop.serve.app import create_app, tune_gc

    gateway = Gateway(
        settings=Settings(default_model="fn:echo"),
        providers={"fn": FunctionModel(lambda request: "ok", keep=0)},
    )
    app = create_app(gateway)
    tune_gc()  # as `outcrop serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def _mock_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    stream = b'"stream"' in body and json.loads(body).get("stream")
    kind = b"text/event-stream" if stream else b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": MOCK_SSE if stream else MOCK_BODY})


def role_mock(port: int) -> None:
    """An OpenAI-compatible backend that answers every request with one fixed completion."""
    import uvicorn

    uvicorn.run(_mock_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    argv: list[str]
    ready_path: str
    workdir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        raise SystemExit(f"{self.name} did not become ready ({' '.join(self.argv)}):\n{tail}")

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used (user + system), where /proc tells."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def running(*servers: Server, timeout: float = 240.0) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout)
        yield
    finally:
        for server in servers:
            server.stop()


# -- the client ---------------------------------------------------------------------------


@dataclass
class Cell:
    """What one server did in one combination, over all its slices."""

    completed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    unfinished: int = 0  # cut off after the drain time
    cpu_s: float | None = 0.0  # the server's CPU time over the slices (None: unknown)
    outputs: dict[str, str] = field(default_factory=dict)

    def error(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message[:300]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rps": round(self.completed / self.seconds, 2) if self.seconds else 0.0,
            "completed": self.completed,
            "p50_ms": ms(pct(self.latencies, 50)),
            "p95_ms": ms(pct(self.latencies, 95)),
        }
        if self.ttfts:
            out["ttft_p50_ms"] = ms(pct(self.ttfts, 50))
            out["ttft_p95_ms"] = ms(pct(self.ttfts, 95))
        if self.cpu_s is not None and self.completed:
            # Noise-robust on a shared machine: what each answer cost the server in CPU.
            out["server_cpu_ms_per_request"] = round(self.cpu_s * 1000 / self.completed, 1)
        if self.tokens:
            out["tokens_per_request"] = round(sum(self.tokens) / len(self.tokens), 1)
        out["errors"] = self.errors
        out["first_error"] = self.first_error
        if self.unfinished:
            out["unfinished"] = self.unfinished
        return out


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def one_request(
    client: httpx2.AsyncClient, body: dict[str, Any], cell: Cell, prompt: str
) -> bool:
    """One chat completion; records it in ``cell``. True if it succeeded."""
    t0 = time.perf_counter()
    try:
        if not body.get("stream"):
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                cell.error(f"HTTP {response.status_code}: {response.text}")
                return False
            data = response.json()
            text = data["choices"][0]["message"].get("content") or ""
            tokens = (data.get("usage") or {}).get("completion_tokens")
            cell.latencies.append(time.perf_counter() - t0)
            if tokens is not None:
                cell.tokens.append(int(tokens))
            cell.outputs.setdefault(prompt, text)
            return True
        first: float | None = None
        pieces: list[str] = []
        done = False
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                cell.error(f"HTTP {response.status_code}: {response.text}")
                return False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                event = json.loads(payload)
                if "error" in event:
                    cell.error(f"error event in stream: {event['error']}")
                    return False
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if first is None:
                            first = time.perf_counter()
                        pieces.append(content)
        if not done:
            cell.error("the stream ended without [DONE]")
            return False
        end = time.perf_counter()
        cell.latencies.append(end - t0)
        if first is not None:
            cell.ttfts.append(first - t0)
        cell.tokens.append(len(pieces))  # one piece per token on both servers
        cell.outputs.setdefault(prompt, "".join(pieces))
        return True
    except (httpx2.HTTPError, ValueError, KeyError) as exc:
        cell.error(f"{exc.__class__.__name__}: {exc}")
        return False


async def run_slice(
    server: Server,
    body: dict[str, Any],
    concurrency: int,
    seconds: float,
    cell: Cell,
    prompts: list[str] | None,
    timeout: float,
    drain: float,
) -> None:
    """``concurrency`` clients send requests back to back until the deadline; those in
    flight then get ``drain`` more seconds, after which they are cut off and counted as
    unfinished (the slice's time runs until the last answer or the cut)."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counter = itertools.count()
    cpu0 = server.cpu_seconds()
    async with httpx2.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                n = next(counter)
                prompt = prompts[n % len(prompts)] if prompts else "Say ok."
                request = {**body, "messages": [{"role": "user", "content": prompt}]}
                if await one_request(client, request, cell, prompt):
                    cell.completed += 1
                elif cell.errors > 50 and cell.completed == 0:
                    return  # nothing works: do not spin

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        _, late = await asyncio.wait(tasks, timeout=seconds + drain)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        cell.unfinished += len(late)
        cell.seconds += time.perf_counter() - start
    cpu1 = server.cpu_seconds()
    if cell.cpu_s is not None:
        cell.cpu_s = None if cpu0 is None or cpu1 is None else cell.cpu_s + cpu1 - cpu0


# -- part 1: the local model --------------------------------------------------------------


def local_model(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    os.environ["OUTCROP_HOME"] = env["OUTCROP_HOME"]
    from outcrop.providers.local import LocalProvider

    provider = LocalProvider()
    name = args.model.removeprefix("local:")
    gguf = provider.model_path(name)  # checks the packaged file's sha256 once
    threads, n_ctx = provider.n_threads, provider.n_ctx
    can_batch = hasattr(LocalProvider, "enable_batching")
    mode = "batching" if can_batch and args.batch_slots > 1 else "serial"

    outcrop = Server(
        "outcrop",
        [str(BIN / "outcrop"), "serve", "--port", "{port}", "--batch-slots", str(args.batch_slots)],
        "/health",
        workdir,
        env,
    )
    llama = Server(
        "llama_cpp",
        [
            *(str(BIN / "python"), "-m", "llama_cpp.server", "--model", str(gguf)),
            *("--host", "127.0.0.1", "--port", "{port}", "--n_ctx", str(n_ctx)),
            *("--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_batch", "512"),
            *("--logits_all", "False", "--interrupt_requests", "False", "--verbose", "False"),
        ],
        "/v1/models",
        workdir,
        env,
    )
    base = {"model": args.model, "temperature": 0, "max_tokens": args.max_tokens}
    sides = {"outcrop": outcrop, "llama_cpp": llama}
    # The peer's request defaults add a repeat penalty of 1.1; outcrop samples without one
    # (top_k 40, top_p 0.95, min_p 0.05, like both). Same sampling: the same greedy tokens.
    extra = {"outcrop": {}, "llama_cpp": {"repeat_penalty": 1.0}}
    cells: dict[tuple[str, int, bool], Cell] = {}
    with running(outcrop, llama):

        async def warm() -> None:  # loads outcrop's model on its first call
            for server in sides.values():
                async with httpx2.AsyncClient(base_url=server.url, timeout=300) as client:
                    for stream in (False, True):
                        cell = Cell()
                        body = {
                            **base,
                            **extra[server.name],
                            "stream": stream,
                            "messages": [{"role": "user", "content": PROMPTS[0]}],
                        }
                        if not await one_request(client, body, cell, PROMPTS[0]):
                            raise SystemExit(f"{server.name} fails at warm-up: {cell.first_error}")

        asyncio.run(warm())
        for round_ in range(args.rounds):
            for concurrency in args.clients:
                for stream in (False, True):
                    order = list(sides)
                    if (round_ + concurrency + stream) % 2:
                        order.reverse()
                    for side in order:
                        cell = cells.setdefault((side, concurrency, stream), Cell())
                        asyncio.run(
                            run_slice(
                                sides[side],
                                {**base, **extra[side], "stream": stream},
                                concurrency,
                                args.duration,
                                cell,
                                PROMPTS,
                                args.request_timeout,
                                args.drain,
                            )
                        )

    results: dict[str, Any] = {}
    for concurrency in args.clients:
        for stream in (False, True):
            key = f"{concurrency}_clients_{'stream' if stream else 'plain'}"
            ours, peer = (
                cells[("outcrop", concurrency, stream)],
                cells[("llama_cpp", concurrency, stream)],
            )
            a, b = ours.summary(), peer.summary()
            same = [p for p in ours.outputs if p in peer.outputs]
            identical = sum(ours.outputs[p] == peer.outputs[p] for p in same)
            results[key] = {
                "outcrop": a,
                "llama_cpp": b,
                "ratio_rps": ratio(a["rps"], b["rps"]),
                "ratio_p95": ratio(a["p95_ms"], b["p95_ms"]),
                "ratio_cpu_per_request": ratio(
                    a.get("server_cpu_ms_per_request"), b.get("server_cpu_ms_per_request")
                ),
                "identical_outputs": f"{identical}/{len(same)}",
            }
    return {
        "gguf": gguf.name,
        "threads": threads,
        "n_ctx": n_ctx,
        "outcrop_mode": mode,
        "batch_slots": args.batch_slots,
        "enable_batching_exists": can_batch,
        "cells": results,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


# -- part 2: gateway overhead -------------------------------------------------------------


def gateway(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    me = [str(BIN / "python"), str(Path(__file__).resolve())]
    mock = Server("mock", [*me, "--role", "mock", "--port", "{port}"], "/v1/models", workdir, env)
    echo = Server(
        "outcrop_fn", [*me, "--role", "echo", "--port", "{port}"], "/health", workdir, env
    )
    # outcrop serve proxying the mock, from a folder whose outcrop.toml names the endpoint.
    proxy_dir = workdir / "proxy"
    proxy_dir.mkdir()
    (proxy_dir / "outcrop.toml").write_text(
        f'default_model = "mock:mock"\n\n[endpoints.mock]\napi = "openai"\n'
        f'base_url = "{mock.url}/v1"\nkey_env = "MOCK_API_KEY"\n'
    )
    proxy = Server(
        "outcrop_proxy",
        [str(BIN / "outcrop"), "serve", "--port", "{port}"],
        "/health",
        proxy_dir,
        {**env, "MOCK_API_KEY": "sk-mock"},
    )
    servers = [mock, echo, proxy]
    models = {"mock": "mock", "outcrop_fn": "fn:echo", "outcrop_proxy": "mock:mock"}
    litellm_bin = shutil.which(args.litellm) or (
        args.litellm if Path(args.litellm).is_file() else None
    )
    litellm_note = None
    if litellm_bin:
        config = workdir / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: mock\n    litellm_params:\n"
            f"      model: openai/mock\n      api_base: {mock.url}/v1\n      api_key: sk-mock\n"
            "litellm_settings:\n  telemetry: false\n"
        )
        litellm_env = {
            **env,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network at start
            "LITELLM_LOG": "ERROR",
            # No keys on either proxy (outcrop's apps run open on loopback too); loopback only.
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        }
        litellm_env.pop("DATABASE_URL", None)
        servers.append(
            Server(
                "litellm",
                [
                    *(litellm_bin, "--config", str(config), "--host", "127.0.0.1"),
                    *("--port", "{port}", "--num_workers", "1"),
                ],
                "/health/liveliness",
                workdir,
                litellm_env,
            )
        )
        models["litellm"] = "mock"
    else:
        litellm_note = (
            f"LiteLLM not found at {args.litellm}: install it with "
            "`python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install "
            "'litellm[proxy]'`; the issue's reference figures stand in."
        )

    cells: dict[tuple[str, int], Cell] = {}
    with running(*servers):
        by_name = {s.name: s for s in servers}

        async def warm() -> None:
            for server in servers:
                body = {"model": models[server.name], "max_tokens": 32}
                cell = Cell()
                await run_slice(server, body, 4, 1.0, cell, None, 30, 30)
                if cell.errors:
                    raise SystemExit(f"{server.name} fails at warm-up: {cell.first_error}")

        asyncio.run(warm())
        for round_ in range(args.rounds):
            for concurrency in args.gateway_clients:
                order = list(by_name)
                if round_ % 2:
                    order.reverse()
                for name in order:
                    cell = cells.setdefault((name, concurrency), Cell())
                    body = {"model": models[name], "max_tokens": 32}
                    asyncio.run(
                        run_slice(
                            by_name[name],
                            body,
                            concurrency,
                            args.gateway_duration,
                            cell,
                            None,
                            args.request_timeout,
                            args.drain,
                        )
                    )

    out: dict[str, Any] = {}
    for concurrency in args.gateway_clients:
        row: dict[str, Any] = {}
        for name in models:
            s = cells[(name, concurrency)].summary()
            keys = ("rps", "p50_ms", "p95_ms", "server_cpu_ms_per_request", "errors", "first_error")
            row[name] = {k: s.get(k) for k in keys}
        lite = row.get("litellm", {}).get("rps")
        row["ratio_outcrop_fn_vs_litellm"] = ratio(row["outcrop_fn"]["rps"], lite)
        row["ratio_outcrop_proxy_vs_litellm"] = ratio(row["outcrop_proxy"]["rps"], lite)
        lite_cpu = row.get("litellm", {}).get("server_cpu_ms_per_request")
        # CPU per request, LiteLLM / outcrop: how many of outcrop's requests one of its costs.
        row["cpu_ratio_litellm_vs_outcrop_fn"] = ratio(
            lite_cpu, row["outcrop_fn"]["server_cpu_ms_per_request"]
        )
        row["cpu_ratio_litellm_vs_outcrop_proxy"] = ratio(
            lite_cpu, row["outcrop_proxy"]["server_cpu_ms_per_request"]
        )
        out[f"{concurrency}_clients"] = row
    if litellm_note:
        out["litellm"] = litellm_note
        out["litellm_reference"] = LITELLM_REFERENCE
        ref = sum(LITELLM_REFERENCE["litellm_rps_8_clients"]) / 2
        for concurrency in args.gateway_clients:
            row = out[f"{concurrency}_clients"]
            row["ratio_outcrop_fn_vs_litellm_reference"] = ratio(row["outcrop_fn"]["rps"], ref)
    return out


# -- the report ---------------------------------------------------------------------------


def verdicts(model: dict[str, Any] | None, gate: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if model:
        cells = model["cells"]
        for c in sorted({int(k.split("_")[0]) for k in cells}):
            rs = [cells[f"{c}_clients_{m}"]["ratio_rps"] for m in ("plain", "stream")]
            out[f"throughput_ratio_{c}_clients"] = rs
            out[f"throughput_ratio_{c}_clients_met"] = all(
                r is not None and r >= TARGETS["throughput_ratio_min"] for r in rs
            )
        p95 = {k: v["ratio_p95"] for k, v in cells.items()}
        out["p95_ratio"] = p95
        # A p95 over the answers that came is no p95 when others never did (unfinished).
        out["p95_ratio_met"] = all(
            r is not None
            and r <= TARGETS["p95_ratio_max"]
            and not cells[k]["outcrop"].get("unfinished")
            for k, r in p95.items()
        )
        streams = cells.get("8_clients_stream")
        if streams:
            ours = streams["outcrop"]
            out["errors_8_streams"] = ours["errors"]
            out["unfinished_8_streams"] = ours.get("unfinished", 0)
            out["errors_8_streams_met"] = ours["errors"] == 0 and not ours.get("unfinished")
    if gate:
        ratios = {
            k: v.get("ratio_outcrop_fn_vs_litellm")
            or v.get("ratio_outcrop_fn_vs_litellm_reference")
            for k, v in gate.items()
            if k.endswith("_clients")
        }
        out["gateway_ratio_vs_litellm"] = ratios
        out["gateway_ratio_met"] = all(
            r is not None and r >= TARGETS["gateway_vs_litellm_min"] for r in ratios.values()
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:smollm2-135m")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per slice")
    parser.add_argument("--rounds", type=int, default=2, help="slices per cell and server")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batch-slots", type=int, default=8, help="outcrop serve --batch-slots")
    parser.add_argument("--gateway-duration", type=float, default=4.0, help="seconds per slice")
    parser.add_argument("--gateway-clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds a slice waits for requests in flight"
    )
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="run both model servers with OMP_WAIT_POLICY=PASSIVE (llama.cpp's OpenMP "
        "threads sleep instead of spinning between steps)",
    )
    parser.add_argument("--skip", choices=["model", "gateway"], action="append", default=[])
    parser.add_argument("--role", choices=["echo", "mock"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "echo":
        return role_echo(args.port)
    if args.role == "mock":
        return role_mock(args.port)

    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="outcrop-bench-serve-"))
    # A home of its own: the servers' trace rows (thousands) stay out of the user's store.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTCROP_HOME": str(workdir / "home")}
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        model = None if "model" in args.skip else local_model(args, workdir, env)
        gate = None if "gateway" in args.skip else gateway(args, workdir, env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "serve",
                "model": args.model,
                "max_tokens": args.max_tokens,
                "slice_s": args.duration,
                "gateway_slice_s": args.gateway_duration,
                "rounds": args.rounds,
                "drain_s": args.drain,
                "omp_wait_policy": env.get("OMP_WAIT_POLICY", "default"),
                "local_model": model,
                "gateway": gate,
                "targets": TARGETS,
                "verdicts": verdicts(model, gate),
                "cpus": os.cpu_count(),
                "wall_s": round(time.perf_counter() - t0, 1),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
