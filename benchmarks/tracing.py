"""What tracing costs: calls per second through the gateway with the SQLite trace store
against the same gateway with tracing off, and trace rows written per second.

Both sides call the same test-double model in one process, interleaved, so the
difference is the trace: building the row, queueing it, and the writer thread
that stores queued rows in batches (a thread of this same process, so on a
CPU-bound loop it competes for the interpreter). "Rows per second" is the
sustained rate the writer stores rows at while calls keep coming.

Prints one JSON line. Usage:

    .venv/bin/python benchmarks/tracing.py [--calls 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
        model = TestModel(default="The capital of France is Paris.")
        return Gateway(
            settings=Settings(default_model="test"), store=store, providers={"test": model}
        )

    traced, untraced = gateway(traced_store), gateway(untraced_store)

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
    print(
        json.dumps(
            {
                "benchmark": "tracing",
                "calls_per_round": args.calls,
                "rounds": args.rounds,
                "calls_per_s_traced": round(median_on, 1),
                "calls_per_s_untraced": round(median_off, 1),
                "overhead": round(1 - median_on / median_off, 3),
                "rows_written_per_s": round(written, 1),
                "target_overhead_max": 0.05,
                "target_rows_per_s_min": 2000,
            }
        )
    )


if __name__ == "__main__":
    main()
