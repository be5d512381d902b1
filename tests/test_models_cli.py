"""``outcrop models list|show|recommend|size``: the catalog and the sizing calculator."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import run


def test_catalog_list_filters_show_and_recommend(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "models", "list", "--kind", "image")
    assert code == 0 and "stability" in out.lower() and "titan" in out.lower()
    assert "claude" not in out.lower()
    code, out, _ = run(capsys, "models", "list", "--catalog", "--min-context", "150000", "--json")
    rows = json.loads(out)
    assert rows and all(r["context"] >= 150000 for r in rows)
    code, out, _ = run(capsys, "models", "show", "llama-3-8b")
    assert code == 0 and "32 layers" in out and "8 KV heads" in out and "source" in out
    code, out, _ = run(
        capsys, "models", "recommend", "classify support tickets offline on a laptop", "--json"
    )
    picks = json.loads(out)
    assert code == 0 and picks and any("runs locally" in r for r in picks[0]["reasons"])


def test_size_a_local_model_a_catalog_model_and_a_bare_count(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "models", "size", "local:smollm2-135m", "--context", "8192")
    assert code == 0
    assert "KV cache (f16)                  180 MiB" in out and "rule of thumb" in out
    code, out, _ = run(capsys, "models", "size", "--params", "1B", "--precision", "fp32", "--json")
    report = json.loads(out)
    assert report["weights"] == 4e9 and report["rule_of_thumb_training"] == 80e9
    code, out, _ = run(capsys, "models", "size", "llama-3.1-8b", "--context", "8192", "--json")
    assert json.loads(out)["kv_per_token"] == 131072


def test_size_bad_input(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "models", "size", "smollm-135m")
    assert code == 1 and "Did you mean 'local:smollm2-135m'" in err
    code, _, err = run(capsys, "models", "size", "--params", "7B", "--context", "-5")
    assert code == 1 and "context must be above 0" in err
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    code, _, err = run(capsys, "models", "size", str(bad))
    assert code == 1 and "broken.gguf" in err and "header ends early" in err
    code, _, err = run(capsys, "models", "size")
    assert code == 1 and "Give a MODEL or --params" in err
    code, _, err = run(capsys, "models", "size", "--params", "7B", "--precision", "fp12")
    assert code == 1 and "Unknown precision 'fp12'" in err
