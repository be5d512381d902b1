"""The sizing calculator's inference prediction against measured resident memory.

For each installed local GGUF, a fresh process loads it with llama-cpp-python at
a given context, fills the context with a prompt and generates, and reports its
resident set size (RSS) growth: after load, and after the full-context
generation (when every weight page, the KV cache and the compute buffers have
been touched). The prediction is ``outcrop.catalog.sizing.size()`` for the same
file and context: weights + KV cache + llama.cpp's working memory.

Prints one JSON line. Usage:

    .venv/bin/python benchmarks/sizing.py [--context 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
from llama_cpp import Llama
path, ctx = sys.argv[1], int(sys.argv[2])
before = rss()
llama = Llama(path, n_ctx=ctx, n_threads=2, verbose=False)
loaded = rss()
words = ("the quick brown fox jumps over a lazy dog and " * 4000).split()
tokens = llama.tokenize(" ".join(words).encode())[: ctx - 40]
n = 0
for _ in llama.generate(tokens, temp=0.0):
    n += 1
    if n >= 24:
        break
after = rss()
print(json.dumps({"before": before, "loaded": loaded, "after": after, "prompt": len(tokens)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=4096)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OUTCROP_HOME", tempfile.mkdtemp(prefix="outcrop-bench-"))

    from outcrop.catalog.sizing import size
    from outcrop.providers.local import LocalProvider

    provider = LocalProvider()
    rows = []
    for info in provider.models():
        if not info.installed or "minilm" in info.id:  # the ONNX embedder is not a GGUF
            continue
        try:
            path = provider.model_path(info.id.split(":", 1)[1])
        except Exception as exc:  # a model that cannot be assembled here is skipped, said
            rows.append({"model": info.id, "skipped": f"{exc.__class__.__name__}: {exc}"})
            continue
        if path.suffix != ".gguf":
            continue
        report = size(str(path), context=args.context)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(args.context)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(out.stdout.strip().splitlines()[-1])
        measured = m["after"] - m["before"]
        predicted = report.inference_total
        rows.append(
            {
                "model": info.id,
                "context": args.context,
                "prompt_tokens": m["prompt"],
                "predicted_mib": round(predicted / 2**20, 1),
                "weights_mib": round(report.weights / 2**20, 1),
                "kv_cache_mib": round(report.kv_cache / 2**20, 1),
                "working_mib": round(report.working / 2**20, 1),
                "measured_after_load_mib": round((m["loaded"] - m["before"]) / 2**20, 1),
                "measured_after_generation_mib": round(measured / 2**20, 1),
                "error": round((predicted - measured) / measured, 3),
                "rule_of_thumb_fp32_mib": round(report.rule_of_thumb_weights / 2**20, 1),
            }
        )
    errors = [abs(r["error"]) for r in rows if "error" in r]
    print(
        json.dumps(
            {
                "benchmark": "sizing",
                "models": rows,
                "max_abs_error": max(errors) if errors else None,
                "target": 0.15,
                "within_target": bool(errors) and max(errors) <= 0.15,
            }
        )
    )


if __name__ == "__main__":
    main()
