"""Generation speed through outcrop's whole pipeline vs raw llama-cpp-python.

Both sides run on the same loaded model (so the same GGUF, threads and
context), with the same prompts, sampling settings and seeds, interleaved
(A B B A …) in one process, the KV cache cleared before every run. outcrop's
side is ``Gateway.stream`` end to end: resolution, the provider, usage and a
trace row written to SQLite. The raw side is
``Llama.create_chat_completion(stream=True)``.

Prints one JSON line. Usage:

    .venv/bin/python benchmarks/local_generation.py [--rounds 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

PROMPTS = [
    "What is a token?",
    "Explain retrieval-augmented generation in two sentences.",
    "Write a short poem about the sea.",
    "List three uses of embeddings.",
    "Why do language models need a context window?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    os.environ.setdefault("OUTCROP_HOME", tempfile.mkdtemp(prefix="outcrop-bench-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from outcrop import Gateway, Settings

    gateway = Gateway(settings=Settings(default_model=args.model))
    resolved = gateway.resolve(args.model)
    provider = resolved.provider
    llama = provider.llama(resolved.name)  # type: ignore[attr-defined]
    settings = dict(max_tokens=args.max_tokens, temperature=0.7, top_p=0.95)

    def run_outcrop(prompt: str, seed: int) -> tuple[float, float, int, str]:
        llama.reset()
        t0 = time.perf_counter()
        first = None
        stream = gateway.stream(prompt, seed=seed, **settings)
        pieces = []
        for piece in stream.text():
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
        end = time.perf_counter()
        assert stream.response is not None and first is not None
        return first - t0, end - first, stream.response.usage.output_tokens, "".join(pieces)

    def run_raw(prompt: str, seed: int) -> tuple[float, float, str]:
        llama.reset()
        t0 = time.perf_counter()
        first = None
        pieces = []
        for chunk in llama.create_chat_completion(
            [{"role": "user", "content": prompt}], stream=True, seed=seed, **settings
        ):
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                if first is None:
                    first = time.perf_counter()
                pieces.append(text)
        end = time.perf_counter()
        assert first is not None
        return first - t0, end - first, "".join(pieces)

    run_outcrop(PROMPTS[0], 0)  # warm up both paths
    run_raw(PROMPTS[0], 0)

    ours = {"ttft": [], "decode_s": 0.0, "tokens": 0}
    raw = {"ttft": [], "decode_s": 0.0, "tokens": 0}
    identical = 0
    runs = 0
    for round_ in range(args.rounds):
        for i, prompt in enumerate(PROMPTS):
            seed = 1000 * round_ + i
            order = ("outcrop", "raw") if (round_ + i) % 2 == 0 else ("raw", "outcrop")
            result: dict[str, tuple] = {}
            for side in order:
                if side == "outcrop":
                    result[side] = run_outcrop(prompt, seed)
                else:
                    result[side] = run_raw(prompt, seed)
            o_ttft, o_dec, tokens, o_text = result["outcrop"]
            r_ttft, r_dec, r_text = result["raw"]
            # Same seed, same settings: the same tokens. Decode speed counts the tokens after
            # the first, over the time after the first.
            ours["ttft"].append(o_ttft)
            raw["ttft"].append(r_ttft)
            ours["decode_s"] += o_dec
            raw["decode_s"] += r_dec
            ours["tokens"] += tokens - 1
            raw["tokens"] += tokens - 1
            identical += o_text == r_text
            runs += 1

    ours_tps = ours["tokens"] / ours["decode_s"]
    raw_tps = raw["tokens"] / raw["decode_s"]
    ours_ttft = statistics.median(ours["ttft"]) * 1000
    raw_ttft = statistics.median(raw["ttft"]) * 1000
    print(
        json.dumps(
            {
                "benchmark": "local_generation",
                "model": args.model,
                "threads": provider.n_threads,  # type: ignore[attr-defined]
                "runs_per_side": runs,
                "max_tokens": args.max_tokens,
                "outcrop_tokens_per_s": round(ours_tps, 2),
                "raw_llama_cpp_tokens_per_s": round(raw_tps, 2),
                "ratio_tokens_per_s": round(ours_tps / raw_tps, 3),
                "outcrop_ttft_ms_p50": round(ours_ttft, 1),
                "raw_llama_cpp_ttft_ms_p50": round(raw_ttft, 1),
                "ratio_ttft": round(ours_ttft / raw_ttft, 3),
                "identical_outputs": f"{identical}/{runs}",
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
