"""What tracing costs: calls per second through the gateway with the SQLite trace store
against the same gateway with tracing off, and trace rows written per second.

Both sides call the same test-double model in one process, interleaved, so the
difference is the trace: building the row, queueing it, and the writer thread
that stores queued rows in batches (a thread of this same process, so on a
CPU-bound loop it competes for the interpreter). "Rows per second" is the
sustained rate the writer stores rows at while calls keep coming.

Part 2 measures the same through HTTP, the way an application's requests reach the
pipeline: two ``outcrop serve`` apps on the same test double, one tracing and one not,
each in its own process, loaded by the same client (8 concurrent plain requests) in
alternating slices. It reports requests/s and each server's CPU time per request (which
machine noise moves far less than requests/s).

Prints one JSON line. Usage:

    .venv/bin/python benchmarks/tracing.py [--calls 15000] [--rounds 9] [--http-seconds 4]
                                           [--listening] [--skip-http]

``--listening`` measures the in-process loop with ``/metrics``' counter subscribed to the
traced store and the garbage collector tuned, as in ``outcrop serve`` (the counter's
cost is then part of the overhead).

Each round ends with a flush, so the rows' writes are inside the timing. The writer
batches up to 50 ms of rows; a round of 15,000 calls (about a second) makes the last
batch's write, which no later call overlaps, a small share of the round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def role_echo(port: int, traced: bool, folder: str) -> None:
    """outcrop's app on a test double, with or without the trace store."""
    import uvicorn

    from outcrop import Gateway, Settings, Store
    from outcrop.observe.store import TraceRow
    from outcrop.providers.testing import TestModel
    from outcrop.serve.app import create_app, tune_gc

    class Untraced(Store):
        def record_later(self, row: TraceRow) -> None:
            return None

    kind = Store if traced else Untraced
    store = kind(os.path.join(folder, f"{'traced' if traced else 'untraced'}-http.db"))
    gateway = Gateway(
        settings=Settings(default_model="test"),
        store=store,
        providers={"test": TestModel(default="The capital of France is Paris.", keep=0)},
    )
    app = create_app(gateway)
    tune_gc()  # as `outcrop serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def http(args: argparse.Namespace, folder: str) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from serve import Cell, Server, run_slice, running

    env = {**os.environ, "OUTCROP_HOME": folder, "HF_HUB_OFFLINE": "1"}
    me = [sys.executable, str(Path(__file__).resolve()), "--folder", folder]
    servers = {
        name: Server(name, [*me, "--role", name, "--port", "{port}"], "/health", Path(folder), env)
        for name in ("traced", "untraced")
    }
    cells = {name: Cell() for name in servers}
    body = {"model": "test", "max_tokens": 16}
    with running(*servers.values()):
        for server in servers.values():  # warm up
            asyncio.run(run_slice(server, body, 8, 1.0, Cell(), None, 30, 5))
        for i in range(args.http_rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for name in order:
                asyncio.run(
                    run_slice(servers[name], body, 8, args.http_seconds, cells[name], None, 30, 5)
                )
    on, off = cells["traced"].summary(), cells["untraced"].summary()
    result: dict[str, Any] = {"clients": 8, "traced": on, "untraced": off}
    result["overhead_rps"] = round(1 - on["rps"] / off["rps"], 3) if off["rps"] else None
    a, b = cells["traced"], cells["untraced"]
    if a.cpu_s and b.cpu_s and a.completed and b.completed:
        cpu_on, cpu_off = a.cpu_s / a.completed, b.cpu_s / b.completed
        result["server_cpu_us_per_request"] = {
            "traced": round(cpu_on * 1e6, 1),
            "untraced": round(cpu_off * 1e6, 1),
        }
        result["overhead_cpu_per_request"] = round(cpu_on / cpu_off - 1, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=15000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--http-seconds", type=float, default=4.0, help="seconds per slice")
    parser.add_argument("--http-rounds", type=int, default=4)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--listening",
        action="store_true",
        help="in process, with /metrics' counter listening to the store, as in a server",
    )
    parser.add_argument("--role", choices=["traced", "untraced"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.role:
        role_echo(args.port, args.role == "traced", args.folder)
        return

    from outcrop import Gateway, Settings, Store
    from outcrop.observe.store import TraceRow
    from outcrop.providers.testing import TestModel

    class Untraced(Store):
        def record_later(self, row: TraceRow) -> None:
            return None

    folder = tempfile.mkdtemp(prefix="outcrop-bench-")
    traced_store = Store(os.path.join(folder, "traced.db"))
    untraced_store = Untraced(os.path.join(folder, "untraced.db"))

    def gateway(store: Store) -> Gateway:
        model = TestModel(default="The capital of France is Paris.", keep=0)
        return Gateway(
            settings=Settings(default_model="test"), store=store, providers={"test": model}
        )

    traced, untraced = gateway(traced_store), gateway(untraced_store)
    if args.listening:  # rows are then queued as themselves and counted once stored
        from outcrop.serve.app import tune_gc
        from outcrop.serve.metrics import Metrics

        Metrics().follow(traced_store)
        tune_gc()  # as `outcrop serve` does

    def rate(gw: Gateway) -> float:
        t0 = time.perf_counter()
        for _ in range(args.calls):
            gw.chat("What is the capital of France?")
        traced_store.flush()
        return args.calls / (time.perf_counter() - t0)

    on: list[float] = []
    off: list[float] = []
    for i in range(args.rounds):  # A B B A … so drift hits both
        pair = [(traced, on), (untraced, off)]
        for gw, out in pair if i % 2 == 0 else reversed(pair):
            out.append(rate(gw))

    rows = traced_store.count()
    t0 = time.perf_counter()
    for _ in range(args.calls):
        traced.chat("What is the capital of France?")
    traced_store.flush()
    written = (traced_store.count() - rows) / (time.perf_counter() - t0)

    median_on, median_off = statistics.median(on), statistics.median(off)
    through_http = None if args.skip_http else http(args, folder)
    print(
        json.dumps(
            {
                "benchmark": "tracing",
                "calls_per_round": args.calls,
                "listening": args.listening,
                "rounds": args.rounds,
                "calls_per_s_traced": round(median_on, 1),
                "calls_per_s_untraced": round(median_off, 1),
                "overhead": round(1 - median_on / median_off, 3),
                "rows_written_per_s": round(written, 1),
                "http": through_http,
                "target_overhead_max": 0.05,
                "target_rows_per_s_min": 2000,
            }
        )
    )


if __name__ == "__main__":
    main()
