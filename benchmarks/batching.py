"""Total tokens/s with continuous batching vs the same requests one after another.

For 1, 4 and 8 clients: the batched side sends N requests at once, one thread each,
through a gateway whose local provider has ``batching=8`` (one llama.cpp context, the
sequences decoded together); the sequential side sends the same N requests one after
another through a gateway on the exclusive path (batching off), as outcrop did before.
Both sides use the same loaded model, prompts and settings (greedy, so their answers
must be the same tokens), interleaved (A B, then B A) in one process. A side's figure is
its output tokens over its wall time, summed over the rounds; rounds go over 1, 4 and
8 clients in turn, so every figure samples the whole run.

Prints one JSON line. Usage:

    .venv/bin/python benchmarks/batching.py [--rounds 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

PROMPTS = [
    "What is a token?",
    "Write a short poem about the sea.",
    "List three uses of embeddings.",
    "Why is the sky blue?",
    "Name three colours.",
    "Give me a recipe for tea.",
    "Explain retrieval-augmented generation in two sentences.",
    "Tell me a story about a dragon.",
    "What is Python?",
    "Why do language models need a context window?",
    "Describe a river in one sentence.",
    "How do I boil an egg?",
]
CLIENTS = (1, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (all CPUs)")
    args = parser.parse_args()

    os.environ.setdefault("OUTCROP_HOME", tempfile.mkdtemp(prefix="outcrop-bench-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from outcrop import Gateway, Settings
    from outcrop.providers.local import LocalProvider

    settings = Settings(default_model=args.model)
    batched_provider = LocalProvider(batching=args.slots, n_threads=args.threads)
    sequential_provider = LocalProvider(n_threads=args.threads)
    sequential = Gateway(settings=settings, providers={"local": sequential_provider})
    batched = Gateway(settings=settings, providers={"local": batched_provider})
    options = dict(max_tokens=args.max_tokens, temperature=0)

    def ask(gateway: Gateway, prompt: str) -> tuple[int, str]:
        response = gateway.chat(prompt, **options)
        return response.usage.output_tokens, response.text

    def run_sequential(prompts: list[str]) -> tuple[float, list[tuple[int, str]]]:
        t0 = time.perf_counter()
        out = [ask(sequential, p) for p in prompts]
        return time.perf_counter() - t0, out

    def run_batched(prompts: list[str]) -> tuple[float, list[tuple[int, str]]]:
        out: list[tuple[int, str]] = [(0, "")] * len(prompts)
        errors: list[BaseException] = []

        def client(i: int) -> None:
            try:
                out[i] = ask(batched, prompts[i])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return elapsed, out

    run_sequential(PROMPTS[:1])  # warm up both paths (and make the engine)
    run_batched(PROMPTS[:2])

    load_before = os.getloadavg()[0]
    identical = runs = 0
    sides = ("sequential", "batched")
    wall = {(side, n): 0.0 for side in sides for n in CLIENTS}
    tokens = {(side, n): 0 for side in sides for n in CLIENTS}
    # Rounds outermost, so every figure samples the whole run (other load on the machine
    # comes and goes); within a round the two sides take turns going first.
    for round_ in range(args.rounds):
        for n in CLIENTS:
            start = (round_ * n) % len(PROMPTS)
            prompts = [PROMPTS[(start + i) % len(PROMPTS)] for i in range(n)]
            order = sides if (round_ + n) % 2 == 0 else sides[::-1]
            results = {}
            for side in order:
                run = run_sequential if side == "sequential" else run_batched
                elapsed, results[side] = run(prompts)
                wall[side, n] += elapsed
                tokens[side, n] += sum(count for count, _ in results[side])
            for prompt, a, b in zip(
                prompts, results["sequential"], results["batched"], strict=True
            ):
                identical += a == b
                if a != b:  # greedy on both sides: say where, on stderr
                    print(f"differs ({n} clients): {prompt!r}: {a} vs {b}", file=sys.stderr)
            runs += n
    figures = {
        side: {str(n): round(tokens[side, n] / wall[side, n], 2) for n in CLIENTS} for side in sides
    }
    batched_provider.close()

    seq, bat = figures["sequential"], figures["batched"]
    print(
        json.dumps(
            {
                "benchmark": "batching",
                "model": args.model,
                "threads": batched_provider.n_threads,
                "cpus": os.cpu_count(),
                "slots": args.slots,
                "max_tokens": args.max_tokens,
                "rounds": args.rounds,
                "sequential_tokens_per_s": seq,
                "batched_tokens_per_s": bat,
                "ratio_batched_vs_sequential": {k: round(bat[k] / seq[k], 3) for k in seq},
                "ratio_at_8": round(bat["8"] / seq["8"], 3),
                "batched_8_vs_batched_1": round(bat["8"] / bat["1"], 3),
                "identical_outputs": f"{identical}/{runs}",
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
