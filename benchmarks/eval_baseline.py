"""Predictive ML vs generative AI on real labelled data: the course's table, measured.

TF-IDF + logistic regression (trained on the whole train split) against the local
LLMs, zero-shot and few-shot, on:

- Banking77 (../shared/datasets/banking77: 10,003 train, 3,080 test, 77 intents);
- SMS Spam Collection (../shared/datasets/sms_spam_collection: 5,574 messages,
  headerless TSV), split 80/20 per label with seed 0.

The LLMs answer through ``Gateway.chat`` (temperature 0, seed 0, a JSON schema
whose label is an enum of the real labels) on a seeded sample of ``--limit`` test
cases; the classic model is scored on the whole test split and on that same
sample, so each LLM figure sits beside a classic figure from the same cases.
Few-shot prompts hold ``--few-shot-per-label`` examples of each label from the
train split (77 for Banking77, 2 for SMS). Each model is loaded by one warm-up
call before it is timed. Published reference: all-MiniLM-L6-v2 embeddings +
logistic regression, accuracy 0.7975 on Banking77 (MTEB).

Prints one JSON line (the tables and progress go to stderr). About 5 minutes on an
idle 2-core machine (scaled from a 20-case run), 14 measured on one shared with other
work (load 5-7, ``--threads 1``: llama.cpp on every core slows down many times over
when the cores are busy). Usage:

    .venv/bin/python benchmarks/eval_baseline.py [--limit 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MODELS = ["local:smollm2-135m", "local:qwen2.5-coder-0.5b"]
REFERENCE = {
    "banking77_all_minilm_l6_v2_logreg_accuracy": 0.7975,
    "source": "MTEB (Muennighoff et al. 2022), Banking77Classification, all-MiniLM-L6-v2",
}


def rounded(data: Any) -> Any:
    if isinstance(data, float):
        return round(data, 4)
    if isinstance(data, dict):
        return {key: rounded(value) for key, value in data.items()}
    if isinstance(data, list):
        return [rounded(value) for value in data]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="LLM test cases per dataset")
    parser.add_argument("--few-shot-per-label", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument(
        "--threads",
        type=int,
        help="llama.cpp threads (default: every core; 1 holds up far better on a busy machine)",
    )
    args = parser.parse_args()

    os.environ.setdefault("OUTCROP_HOME", tempfile.mkdtemp(prefix="outcrop-bench-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from outcrop import Gateway
    from outcrop.errors import OutcropError
    from outcrop.evals.baseline import load_labelled, run_baseline, stratified_split
    from outcrop.providers.local import LocalProvider

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    local = LocalProvider(n_threads=args.threads)
    gateway = Gateway(providers={"local": local})
    models, skipped = [], {}
    for model in args.models:
        try:
            gateway.chat("Hi", model=model, max_tokens=1, temperature=0, seed=0)  # load it
            models.append(model)
        except OutcropError as exc:
            skipped[model] = str(exc)

    banking = DATA / "banking77"
    columns = {"text_column": "text", "label_column": "category"}
    sms = load_labelled(
        DATA / "sms_spam_collection" / "SMSSpamCollection", text_column=1, label_column=0
    )
    datasets = {
        "banking77": (
            load_labelled(banking / "train.csv", **columns),
            load_labelled(banking / "test.csv", **columns),
        ),
        "sms_spam": stratified_split(sms, test_size=0.2, seed=0),
    }
    out: dict[str, Any] = {
        "benchmark": "eval_baseline",
        "limit": args.limit,
        "seed": args.seed,
        "few_shot_per_label": args.few_shot_per_label,
        "models": models,
        "skipped_models": skipped,
    }

    def progress(stage: str, done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            print(
                f"  {stage}: {done}/{total} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )

    for name, (train, test) in datasets.items():
        t0 = time.perf_counter()
        k = args.few_shot_per_label * len({row.label for row in train})
        print(name, file=sys.stderr)
        result = run_baseline(
            gateway,
            train,
            test,
            models=models,
            few_shot=k,
            limit=args.limit,
            seed=args.seed,
            progress=progress,
        )
        print(f"\n{name}\n{result.table()}", file=sys.stderr)
        out[name] = {**result.to_dict(), "wall_s": time.perf_counter() - t0}
    out["reference"] = REFERENCE
    out["threads"] = local.n_threads
    # Other processes on the machine slow llama.cpp a lot: the load says how busy it was.
    out["load_avg_1m"] = {"start": load_before, "end": os.getloadavg()[0]}
    out["wall_s"] = time.perf_counter() - started
    out["python"] = sys.version.split()[0]
    print(json.dumps(rounded(out)))


if __name__ == "__main__":
    main()
