"""How much memory a model needs — to run it, to fine-tune it — and will it fit.

The course's rule of thumb: one parameter in 32-bit floats is 4 bytes, so a
billion parameters need about 4 GB for the weights alone, and training needs
about 20 times that (optimizer states, gradients, activations). ``size()``
gives the precise figures beside it:

- weights: parameters × bytes per parameter at the precision or GGUF
  quantisation type (its real bits per weight, block scales included);
- KV cache: 2 (keys and values) × layers × KV heads × head dim × context ×
  batch × bytes per element — grouped-query attention shrinks it by
  heads / KV heads; a quantised cache (q8_0, q4_0) by its bits;
- llama.cpp's working memory: the logits of a prompt batch (batch × vocabulary
  × 4 bytes) or the attention scores of a long context, whichever is larger;
- training: mixed-precision Adam holds 16 bytes a parameter (fp16 weights and
  gradients, fp32 master weights and two moments) before activations; LoRA
  freezes the base in 16 bits and trains a few adapters; QLoRA freezes it in
  4-bit NF4.

The architecture comes from a GGUF header (read here, no dependency), a
Hugging Face ``config.json``, a safetensors header, the catalog, or a bare
parameter count.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from ..errors import InvalidRequestError, ModelFileError

__all__ = [
    "GPUS",
    "Architecture",
    "SizeReport",
    "architecture_from_config",
    "architecture_from_gguf",
    "architecture_from_safetensors",
    "bytes_per_weight",
    "parse_params",
    "size",
]

GB = 1e9
GiB = 1024**3
RUNTIME_BYTES = 32 * 1024**2

# Bits per weight of each precision and GGUF type (block scales included): a
# ggml block of N weights takes B bytes, so 8·B/N bits a weight.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {  # id: (name, block weights, block bytes)
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
}

_PRECISION_BITS: dict[str, float] = {
    "fp32": 32.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "int8": 8.0,
    "int4": 4.0,
    "nf4": 4.127,  # QLoRA's NormalFloat4 with double-quantised block constants
    **{name.lower(): 8 * nbytes / n for name, n, nbytes in _GGML_TYPES.values()},
    # llama.cpp's mixes (different types for different tensors), as llama-quantize reports
    # them for a 7B Llama: bits per weight over the whole file.
    "q2_k_s": 2.97,
    "q3_k_s": 3.50,
    "q3_k_m": 3.91,
    "q3_k_l": 4.27,
    "q4_k_s": 4.58,
    "q4_k_m": 4.85,
    "q5_k_s": 5.54,
    "q5_k_m": 5.69,
}

_KV_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0}


def bytes_per_weight(precision: str) -> float:
    """Bytes a weight takes at ``precision`` (fp32, fp16, bf16, int8, int4, nf4, a GGUF type)."""
    bits = _PRECISION_BITS.get(precision.lower())
    if bits is None:
        raise InvalidRequestError(
            f"Unknown precision {precision!r}; use one of: {', '.join(_PRECISION_BITS)}",
            field="precision",
        )
    return bits / 8


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float
    bandwidth_gbs: float  # memory bandwidth, GB/s


GPUS: list[GPU] = [
    GPU("RTX 3060 12GB", 12, 360),
    GPU("RTX 4080 16GB", 16, 717),
    GPU("RTX 4090 24GB", 24, 1008),
    GPU("L4 24GB", 24, 300),
    GPU("A10 24GB", 24, 600),
    GPU("A100 40GB", 40, 1555),
    GPU("L40S 48GB", 48, 864),
    GPU("A100 80GB", 80, 2039),
    GPU("H100 80GB", 80, 3350),
    GPU("H200 141GB", 141, 4800),
]


@dataclass(frozen=True)
class Architecture:
    """What sizing needs to know of a transformer; ``None`` where unknown."""

    params: float
    name: str | None = None
    active_params: float | None = None  # mixture of experts: parameters used per token
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    context: int | None = None
    vocab: int | None = None
    intermediate: int | None = None
    weight_bytes: int | None = None  # exact tensor bytes, when read from a file
    file_type: str | None = None  # e.g. "Q4_1 (mostly)" for a GGUF
    source: str = "parameters"

    def __post_init__(self) -> None:
        if not self.params > 0:
            raise InvalidRequestError("The parameter count must be above 0.", field="params")

    @property
    def kv_dim(self) -> int | None:
        """Width of one layer's keys (or values): KV heads × head dim."""
        if self.kv_heads is None or self.head_dim is None:
            return None
        return self.kv_heads * self.head_dim


def parse_params(text: str) -> float:
    """``7B``, ``135M``, ``1.5b``, ``7e9`` → a parameter count."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbt]?)\s*", text, re.IGNORECASE)
    if not m:
        raise InvalidRequestError(
            f"{text!r} is not a parameter count; write e.g. 7B, 135M or 1.5e9", field="params"
        )
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    if value <= 0:
        raise InvalidRequestError("The parameter count must be above 0.", field="params")
    return value


# -- reading architectures -------------------------------------------------------


def _file_error(path: Path, message: str) -> ModelFileError:
    return ModelFileError(f"{path}: {message}", path=path)


class _Reader:
    def __init__(self, f: BinaryIO, path: Path):
        self.f = f
        self.path = path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _file_error(self.path, "not a complete GGUF file (the header ends early)")
        return data

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> str:
        n = self.u64()
        if n > 1 << 24:
            raise _file_error(self.path, f"a GGUF string of {n} bytes: the file is corrupt")
        return self.take(n).decode("utf-8", errors="replace")

    # GGUF value type → struct format
    _SCALARS: ClassVar[dict[int, str]] = dict(
        zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True)
    )

    def value(self, kind: int, depth: int = 0) -> Any:
        if kind in self._SCALARS:
            fmt = "<" + self._SCALARS[kind]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if kind == 8:
            return self.string()
        if kind == 9 and depth == 0:
            item, n = self.u32(), self.u64()
            if n > 1 << 26:
                raise _file_error(self.path, f"a GGUF array of {n} items: the file is corrupt")
            if item in self._SCALARS:  # skip big numeric arrays (token scores) quickly
                size = struct.calcsize("<" + self._SCALARS[item])
                if n > 64:
                    self.f.seek(size * n, os.SEEK_CUR)
                    return n
            return [self.value(item, depth + 1) for _ in range(n)]
        raise _file_error(self.path, f"unknown GGUF value type {kind}: the file is corrupt")


def architecture_from_gguf(path: Path | str) -> Architecture:
    """Read layers, heads, context and the exact tensor sizes from a GGUF file's header."""
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise _file_error(path, f"cannot read it ({exc.strerror or exc})") from None
    with f:
        r = _Reader(f, path)
        if r.take(4) != b"GGUF":
            raise _file_error(path, "not a GGUF file (it does not start with 'GGUF')")
        version = r.u32()
        if version not in (2, 3):
            raise _file_error(path, f"GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = r.u64(), r.u64()
        if n_tensors > 1 << 20 or n_kv > 1 << 20:
            raise _file_error(path, "the GGUF header counts are impossible: corrupt file")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.u32())
        params = 0
        expert_params = 0
        weight_bytes = 0
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.u32()
            if n_dims > 8:
                raise _file_error(path, f"a tensor with {n_dims} dimensions: corrupt file")
            dims = [r.u64() for _ in range(n_dims)]
            kind = r.u32()
            r.u64()  # offset
            count = math.prod(dims)
            params += count
            if "_exps" in name:
                expert_params += count
            if kind not in _GGML_TYPES:
                raise _file_error(path, f"unknown tensor type {kind}: corrupt or newer file")
            _, block, nbytes = _GGML_TYPES[kind]
            weight_bytes += count // block * nbytes
    arch = str(meta.get("general.architecture", ""))

    def get(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int | float) else None

    heads = get("attention.head_count")
    hidden = get("embedding_length")
    key_length = get("attention.key_length")
    head_dim = key_length or (hidden // heads if hidden and heads else None)
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size") or (
        tokens if isinstance(tokens, int) else len(tokens) if isinstance(tokens, list) else None
    )
    file_type = meta.get("general.file_type")
    ftype = _GGML_FILE_TYPES.get(int(file_type)) if isinstance(file_type, int) else None
    experts, used = get("expert_count"), get("expert_used_count")
    return Architecture(
        params=float(params),
        name=str(meta.get("general.name") or path.stem),
        active_params=(
            float(params - expert_params * (1 - used / experts))
            if experts and used and expert_params
            else None
        ),
        layers=get("block_count"),
        hidden=hidden,
        heads=heads,
        kv_heads=get("attention.head_count_kv") or heads,
        head_dim=head_dim,
        context=get("context_length"),
        vocab=vocab,
        intermediate=get("feed_forward_length"),
        weight_bytes=weight_bytes,
        file_type=ftype,
        source=f"GGUF header of {path.name}",
    )


_GGML_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
                    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
                    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}  # fmt: skip


def architecture_from_config(path: Path | str) -> Architecture:
    """A Hugging Face ``config.json``; parameters counted from the shapes it gives."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _file_error(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _file_error(path, f"cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise _file_error(
            path, f"not valid JSON (line {exc.lineno}: {exc.msg}); is it a config.json?"
        ) from None
    if not isinstance(data, dict):
        raise _file_error(path, "a config.json holds an object of settings")
    data = data.get("text_config", data)
    need = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
    missing = [k for k in need if not isinstance(data.get(k), int) or data[k] <= 0]
    if missing:
        raise _file_error(
            path,
            f"{', '.join(missing)} missing or not a positive whole number; outcrop "
            "sizes decoder transformers described by these fields",
        )
    layers, hidden, heads, vocab = (int(data[k]) for k in need)
    kv_heads = int(data.get("num_key_value_heads") or heads)
    head_dim = int(data.get("head_dim") or hidden // heads)
    inter = int(data.get("intermediate_size") or 4 * hidden)
    experts = int(data.get("num_local_experts") or data.get("num_experts") or 1)
    used = int(data.get("num_experts_per_tok") or 1)
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * inter  # gated (SwiGLU): gate, up, down
    norms = 2 * hidden
    embed = vocab * hidden * (1 if data.get("tie_word_embeddings") else 2)
    total = embed + layers * (attn + mlp * experts + norms) + hidden
    active = embed + layers * (attn + mlp * used + norms) + hidden if experts > 1 else None
    return Architecture(
        params=float(total),
        name=str(data.get("_name_or_path") or path.parent.name),
        active_params=float(active) if active else None,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        context=int(data.get("max_position_embeddings") or 0) or None,
        vocab=vocab,
        intermediate=inter,
        source=f"{path.name}",
    )


_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip


def architecture_from_safetensors(path: Path | str) -> Architecture:
    """The parameter count and stored bytes from a safetensors header (a ``config.json``
    beside it adds the shapes)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise _file_error(path, "not a safetensors file (shorter than its header)")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise _file_error(path, f"a {n}-byte header: not a safetensors file")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise _file_error(path, f"cannot read it ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _file_error(path, "the safetensors header is not valid JSON") from None
    params = 0
    stored = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = math.prod(info.get("shape", []))
        params += count
        stored += count * _ST_BYTES.get(str(info.get("dtype")), 2)
    if params == 0:
        raise _file_error(path, "the header lists no tensors")
    config = path.parent / "config.json"
    base = architecture_from_config(config) if config.exists() else None
    if base is not None:
        return replace(base, params=float(params), weight_bytes=stored, source=path.name)
    return Architecture(params=float(params), weight_bytes=stored, source=path.name)


# -- the report -------------------------------------------------------------------


@dataclass
class Fit:
    device: str
    memory_gb: float
    inference: bool
    lora: bool
    qlora: bool
    full_training: bool
    tokens_per_s: float | None  # memory-bandwidth bound on decoding


@dataclass
class SizeReport:
    """Memory in bytes; ``rule_of_thumb`` is the course's estimate, beside the precise one."""

    architecture: Architecture
    precision: str
    context: int
    batch: int
    kv_cache_type: str
    weights: float
    kv_cache: float
    kv_per_token: float | None
    working: float  # llama.cpp's compute buffers
    inference_total: float
    training_full: float
    training_full_checkpointed: float
    training_lora: float
    training_qlora: float
    lora_params: float
    rule_of_thumb_weights: float
    rule_of_thumb_training: float
    notes: list[str] = field(default_factory=list)
    fits: list[Fit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["architecture"] = {k: v for k, v in asdict(self.architecture).items() if v is not None}
        return data


def _activations(arch: Architecture, seq: int, batch: int, checkpointed: bool) -> float:
    """Activation memory of training in 16 bits (Korthikanti et al. 2022, 'Reducing
    Activation Recomputation in Large Transformer Models', eq. 1 without parallelism):
    per layer s·b·h·(34 + 5·a·s/h) bytes; with full checkpointing, 2·s·b·h per layer
    plus one layer recomputed."""
    if arch.layers is None or arch.hidden is None or arch.heads is None:
        return 0.0
    s, b, h, a, n = seq, batch, arch.hidden, arch.heads, arch.layers
    per_layer = s * b * h * (34 + 5 * a * s / h)
    if checkpointed:
        return 2 * s * b * h * n + per_layer
    return per_layer * n


def _lora_params(arch: Architecture, rank: int) -> float:
    """LoRA adapters of rank ``rank`` on the attention projections q, k, v, o."""
    if arch.layers is None or arch.hidden is None or arch.heads is None:
        return arch.params * 0.004  # a typical share when the shapes are unknown
    head_dim = arch.head_dim or arch.hidden // arch.heads
    q = arch.heads * head_dim
    kv = (arch.kv_heads or arch.heads) * head_dim
    per_layer = rank * ((arch.hidden + q) * 2 + (arch.hidden + kv) * 2)
    return float(per_layer * arch.layers)


def _machine_ram() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None


def size(
    arch: Architecture | str | float,
    *,
    precision: str | None = None,
    context: int | None = None,
    batch: int = 1,
    kv_cache_type: str = "f16",
    train_seq: int = 2048,
    lora_rank: int = 16,
    n_ubatch: int = 512,
) -> SizeReport:
    """Memory to run and to fine-tune a model.

    ``arch``: an :class:`Architecture`, a parameter count (``"7B"`` or ``7e9``), or a path
    to a GGUF file, a config.json or a safetensors file. ``precision``: fp32, fp16, bf16,
    int8, int4, nf4 or a GGUF type (default: the file's own, else fp16).
    """
    if isinstance(arch, str):
        candidate = Path(arch)
        if candidate.suffix == ".gguf" or (candidate.exists() and candidate.is_file()):
            if not candidate.exists():
                raise _file_error(candidate, "no such file")
            if candidate.suffix == ".gguf":
                arch = architecture_from_gguf(candidate)
            elif candidate.suffix == ".safetensors":
                arch = architecture_from_safetensors(candidate)
            else:
                arch = architecture_from_config(candidate)
        else:
            arch = Architecture(params=parse_params(arch))
    elif isinstance(arch, int | float):
        arch = Architecture(params=float(arch))
    if context is not None and context <= 0:
        raise InvalidRequestError(f"context must be above 0 (got {context})", field="context")
    if batch <= 0:
        raise InvalidRequestError(f"batch must be above 0 (got {batch})", field="batch")
    if train_seq <= 0 or lora_rank <= 0:
        raise InvalidRequestError("train_seq and lora_rank must be above 0", field="train_seq")
    if kv_cache_type not in _KV_BITS:
        raise InvalidRequestError(
            f"Unknown KV cache type {kv_cache_type!r}; use one of: {', '.join(_KV_BITS)}",
            field="kv_cache_type",
        )
    notes: list[str] = []
    ctx = context or arch.context or 4096
    if context is None and arch.context is None:
        notes.append("context unknown: sized for 4,096 tokens (set --context)")
    if precision is None and arch.weight_bytes is not None:
        weights = float(arch.weight_bytes)
        precision = f"as stored ({arch.file_type or 'file'})"
    else:
        precision = precision or "fp16"
        weights = arch.params * bytes_per_weight(precision)
    kv_dim = arch.kv_dim
    if kv_dim is None and arch.hidden is not None:
        kv_dim = arch.hidden
    kv_per_token = None
    kv_cache = 0.0
    if arch.layers is not None and kv_dim is not None:
        kv_per_token = 2 * arch.layers * kv_dim * _KV_BITS[kv_cache_type] / 8
        kv_cache = kv_per_token * ctx * batch
        if arch.kv_heads and arch.heads and arch.kv_heads < arch.heads:
            notes.append(
                f"grouped-query attention: {arch.heads} query heads share {arch.kv_heads} KV "
                f"heads, so the KV cache is {arch.heads // arch.kv_heads}× smaller than with "
                "one KV head per query head"
            )
    else:
        notes.append("layers and KV heads unknown: no KV cache figure (give a GGUF or config)")
    working = 0.0
    if arch.vocab is not None:
        logits = n_ubatch * arch.vocab * 4.0
        scores = n_ubatch * ctx * (arch.heads or 0) * 4.0 * 1.15
        # + the output buffer, and the runtime's own: thread pools, the ggml context and
        # llama.cpp's tables (about 32 MiB measured on this project's machine).
        working = max(logits, scores) + arch.vocab * 4.0 * batch + RUNTIME_BYTES
    else:
        working = 0.05 * weights
        notes.append("vocabulary unknown: working memory estimated as 5% of the weights")
    inference_total = weights + kv_cache + working

    params = arch.params
    act_full = _activations(arch, train_seq, 1, checkpointed=False)
    act_ckpt = _activations(arch, train_seq, 1, checkpointed=True)
    training_full = 16 * params + act_full
    training_ckpt = 16 * params + act_ckpt
    lora = _lora_params(arch, lora_rank)
    training_lora = 2 * params + 16 * lora + act_ckpt
    training_qlora = params * bytes_per_weight("nf4") + 16 * lora + act_ckpt
    if act_full == 0:
        notes.append("layer shapes unknown: training figures leave out activations")

    report = SizeReport(
        architecture=arch,
        precision=precision,
        context=ctx,
        batch=batch,
        kv_cache_type=kv_cache_type,
        weights=weights,
        kv_cache=kv_cache,
        kv_per_token=kv_per_token,
        working=working,
        inference_total=inference_total,
        training_full=training_full,
        training_full_checkpointed=training_ckpt,
        training_lora=training_lora,
        training_qlora=training_qlora,
        lora_params=lora,
        rule_of_thumb_weights=4 * params,
        rule_of_thumb_training=80 * params,
        notes=notes,
    )
    per_token_read = (arch.active_params or params) / params * weights
    devices = [(g.name, g.memory_gb * GB, g.bandwidth_gbs) for g in GPUS]
    ram = _machine_ram()
    if ram:
        devices.append(("this machine's RAM", ram, 0.0))
    for name, memory, bandwidth in devices:
        usable = memory * 0.95
        report.fits.append(
            Fit(
                device=name,
                memory_gb=round(memory / GB, 1),
                inference=inference_total <= usable,
                lora=training_lora <= usable,
                qlora=training_qlora <= usable,
                full_training=training_ckpt <= usable,
                tokens_per_s=(bandwidth * GB / (per_token_read + kv_cache)) if bandwidth else None,
            )
        )
    return report
