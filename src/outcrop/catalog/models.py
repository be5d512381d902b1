"""The foundation-model catalog, from ``data/models.toml`` (dated, each figure with its source).

::

    catalog()                      every model, in the data file's order
    find("claude 3 haiku")         one model by any of its ids, its name, or a unique part of them
    filter_models(task="code", runs_locally=True)
    recommend("classify support tickets offline on a laptop")

Prices are not kept here: a model names its entry in ``prices.toml`` (``price_id``)
and :attr:`CatalogModel.price` reads it through :mod:`outcrop.catalog.prices`.

``recommend`` reads the task description with a small keyword table
(:data:`TASK_KEYWORDS`), keeps the models that meet the hard constraints, and
ranks them by use-case match, the needs the words imply (offline, long inputs,
low cost, open weights), price and an editorial capability tier. It is
deterministic: the same description and catalog always give the same ranking.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError, InvalidRequestError, UnknownModelError
from .prices import Price
from .prices import price as _listed_price

if TYPE_CHECKING:
    from .sizing import Architecture

__all__ = [
    "KINDS",
    "MODALITIES",
    "TASK_KEYWORDS",
    "USE_CASES",
    "CatalogArchitecture",
    "CatalogModel",
    "Packaged",
    "Recommendation",
    "TaskProfile",
    "as_of",
    "catalog",
    "filter_models",
    "find",
    "read_task",
    "recommend",
]

Kind = Literal["chat", "embedding", "image"]
Modality = Literal["text", "image", "embedding"]

KINDS: tuple[str, ...] = ("chat", "embedding", "image")
MODALITIES: tuple[str, ...] = ("text", "image", "embedding")

#: Every use case a catalog entry may name.
USE_CASES: tuple[str, ...] = (
    "chat",
    "classification",
    "clustering",
    "code",
    "embeddings",
    "extraction",
    "image editing",
    "image generation",
    "math",
    "multilingual",
    "rag",
    "reasoning",
    "semantic search",
    "summarisation",
    "tool use",
    "vision",
    "writing",
)

# Figures that may be marked approximate, and the figures a source may be given for.
_FIGURES = ("parameters", "active_parameters", "context", "dimensions", "architecture")
_SOURCED = ("parameters", "context", "dimensions", "architecture", "modalities", "licence")
_ID_PREFIXES = ("bedrock:", "openai:", "local:", "hf:")
_DATA = "data/models.toml"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogArchitecture(_Frozen):
    """A transformer's shape, from its config.json (or the packaged file's header)."""

    family: str = Field(description="config.json's model_type: llama, qwen2, gemma2, bert, …")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0, description="hidden size (d_model)")
    heads: int = Field(gt=0, description="attention (query) heads")
    kv_heads: int = Field(gt=0, description="key/value heads; fewer than heads is GQA")
    head_dim: int = Field(gt=0)
    intermediate: int = Field(gt=0, description="feed-forward width (per expert for MoE)")
    vocab: int = Field(gt=0)
    tied_embeddings: bool | None = Field(
        default=None, description="output layer shares the word embeddings; None: no LM head"
    )
    experts: int | None = Field(default=None, gt=1)
    experts_per_token: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogArchitecture:
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if (self.experts is None) != (self.experts_per_token is None):
            raise ValueError("give both experts and experts_per_token, or neither")
        if self.experts and self.experts_per_token and self.experts_per_token > self.experts:
            raise ValueError("experts_per_token is more than experts")
        return self

    @property
    def grouped_query(self) -> bool:
        """Several query heads share each key/value head (a smaller KV cache)."""
        return self.kv_heads < self.heads


class Packaged(_Frozen):
    """The model file outcrop installs from a package, as read from the file."""

    format: Literal["GGUF", "ONNX"]
    quantisation: str
    file_bytes: int = Field(gt=0)
    parameters_in_file: int | None = Field(default=None, gt=0)
    package: str


class CatalogModel(_Frozen):
    """One foundation model: what it is, what it costs, what it is good for."""

    name: str
    ids: tuple[str, ...] = Field(min_length=1)
    provider: str
    kind: Kind
    parameters: int | None = Field(default=None, gt=0)
    active_parameters: int | None = Field(default=None, gt=0)
    context: int | None = Field(default=None, gt=0, description="longest input, tokens")
    dimensions: int | None = Field(default=None, gt=0, description="embedding length")
    modalities_in: tuple[Modality, ...] = Field(min_length=1)
    modalities_out: tuple[Modality, ...] = Field(min_length=1)
    licence: str
    open_weights: bool
    runs_locally: bool
    tier: int = Field(ge=1, le=5, description="editorial capability tier, 5 = frontier")
    use_cases: tuple[str, ...] = Field(min_length=1)
    strengths: str
    price_id: str | None = Field(default=None, description='"api:model" in prices.toml')
    approximate: tuple[str, ...] = ()
    notes: str = ""
    architecture: CatalogArchitecture | None = None
    packaged: Packaged | None = None
    sources: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogModel:
        bad_ids = [i for i in self.ids if not i.startswith(_ID_PREFIXES)]
        if bad_ids:
            raise ValueError(f"ids {bad_ids} must start with one of {', '.join(_ID_PREFIXES)}")
        unknown = sorted(set(self.use_cases) - set(USE_CASES))
        if unknown:
            raise ValueError(f"unknown use cases {unknown}; known: {', '.join(USE_CASES)}")
        for name in self.approximate:
            if name not in _FIGURES or getattr(self, name) is None:
                raise ValueError(f"approximate names {name!r}, which is not a figure given here")
        for name in self.sources:
            if name not in (*_SOURCED, "packaged"):
                raise ValueError(f"a source for {name!r}, which is not a sourced figure")
        for name in _SOURCED:
            if name in ("modalities", "licence"):
                continue
            if getattr(self, name) is not None and name not in self.sources:
                raise ValueError(f"{name} is given without a source")
        if self.active_parameters and self.parameters and self.active_parameters > self.parameters:
            raise ValueError("active_parameters is more than parameters")
        if self.runs_locally and not self.open_weights:
            raise ValueError("runs_locally needs open weights")
        if self.kind == "embedding" and (
            self.dimensions is None or self.modalities_out != ("embedding",)
        ):
            raise ValueError("an embedding model needs dimensions and modalities_out = embedding")
        if self.kind == "image" and "image" not in self.modalities_out:
            raise ValueError("an image model must output images")
        return self

    @property
    def id(self) -> str:
        """The id listings show (the first of ``ids``)."""
        return self.ids[0]

    @property
    def price(self) -> Price | None:
        """The listed price from prices.toml, or None (local models, unlisted ones)."""
        if self.price_id is None:
            return None
        api, _, model = self.price_id.partition(":")
        return _listed_price(api, model)

    @property
    def input_price(self) -> float | None:
        """US dollars per million input tokens; None when not priced per token."""
        p = self.price
        if p is None or p.image is not None:
            return None
        return p.input

    @property
    def installed_with_outcrop(self) -> bool:
        """A ``local:`` model whose file comes out of a package outcrop knows."""
        return self.packaged is not None

    def is_approximate(self, figure: str) -> bool:
        return figure in self.approximate

    def sizing_architecture(self) -> Architecture:
        """This model's figures for :func:`outcrop.catalog.sizing.size`."""
        from .sizing import Architecture

        if self.parameters is None:
            raise InvalidRequestError(
                f"{self.name} has no published parameter count, so it cannot be sized; "
                "pass --params with an estimate",
                field="model",
            )
        a = self.architecture
        return Architecture(
            params=float(self.parameters),
            name=self.name,
            active_params=float(self.active_parameters) if self.active_parameters else None,
            layers=a.layers if a else None,
            hidden=a.hidden if a else None,
            heads=a.heads if a else None,
            kv_heads=a.kv_heads if a else None,
            head_dim=a.head_dim if a else None,
            context=self.context,
            vocab=a.vocab if a else None,
            intermediate=a.intermediate if a else None,
            source="catalog",
        )


class _CatalogFile(_Frozen):
    as_of: datetime.date
    models: tuple[CatalogModel, ...] = Field(min_length=1)


@cache
def _load() -> _CatalogFile:
    resource = resources.files("outcrop.catalog").joinpath(_DATA)
    path = Path(str(resource))
    try:
        data = tomllib.loads(resource.read_text("utf-8"))
        loaded = _CatalogFile.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the model catalog is not valid TOML: {exc}", path=path) from None
    except ValidationError as exc:
        raise ConfigError(f"the model catalog is malformed: {exc}", path=path) from None
    seen: dict[str, str] = {}
    for model in loaded.models:
        for model_id in model.ids:
            if model_id.lower() in seen:
                raise ConfigError(
                    f"the model catalog gives id {model_id!r} to both "
                    f"{seen[model_id.lower()]!r} and {model.name!r}",
                    path=path,
                )
            seen[model_id.lower()] = model.name
    return loaded


def catalog() -> list[CatalogModel]:
    """Every model in the catalog, in the data file's order."""
    return list(_load().models)


def as_of() -> datetime.date:
    """The date the catalog's figures were last checked."""
    return _load().as_of


# -- find ---------------------------------------------------------------------------


def _bare(model_id: str) -> str:
    return model_id.split(":", 1)[1]


def _keys(model: CatalogModel) -> list[str]:
    keys = [model.name.lower()]
    for model_id in model.ids:
        keys += [model_id.lower(), _bare(model_id).lower()]
    return keys


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find(name: str) -> CatalogModel:
    """The model with this id or name, or whose ids or name alone contain ``name``.

    Matching ignores case; ``bedrock:``/``hf:``/``local:`` prefixes are optional, and
    spaces, dots and dashes are ignored when nothing matches as written
    ("llama 3.1 8b", "llama-3.1-8b"). Raises :class:`UnknownModelError` with close
    matches when no model, or more than one, answers to ``name``.
    """
    key = name.strip().lower()
    if not key:
        raise InvalidRequestError("Give a model name or id.", field="model")
    models = catalog()
    squashed = _squash(key)
    keys = [(m, _keys(m)) for m in models]
    squashed_keys = [(m, [_squash(k) for k in ks]) for m, ks in keys]
    exact = (
        [m for m, ks in keys if key in ks],
        [m for m, ks in squashed_keys if squashed and squashed in ks],
    )
    for hits in exact:
        if len(hits) == 1:
            return hits[0]
    contained = (
        [m for m, ks in keys if any(key in k for k in ks)],
        [m for m, ks in squashed_keys if squashed and any(squashed in k for k in ks)],
    )
    for hits in contained:
        if len(hits) == 1:
            return hits[0]
        if hits:
            more = f" (the first 5 of {len(hits)})" if len(hits) > 5 else ""
            raise UnknownModelError(
                name,
                [m.id for m in hits[:5]],
                hint=f" {name!r} is part of several models' names{more}: give more of it, "
                "or a full id.",
            )
    by_key = {k: m.id for m in models for k in _keys(m)}
    close = difflib.get_close_matches(key, list(by_key), n=8, cutoff=0.6)
    suggestions = list(dict.fromkeys(by_key[k] for k in close))[:3]
    raise UnknownModelError(
        name, suggestions, hint=" Run `outcrop models list` to see the catalog."
    )


# -- reading a task -----------------------------------------------------------------

# (pattern, use cases, needs). Needs: local, long_context, cheap, open_weights.
TASK_KEYWORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (r"summar|tl;?dr|digest|condens|key points", ("summarisation",), ()),
    (
        r"\bcode|coding|program|python|javascript|typescript|\bsql\b|\bbugs?\b|debug|refactor"
        r"|unit tests?",
        ("code",),
        (),
    ),
    (
        r"classif|categori[sz]|\blabel|intent|sentiment|triage|\brout(e|ing)\b|\bspam\b"
        r"|moderat|\btag",
        ("classification",),
        (),
    ),
    (r"\bsearch|retriev|\brag\b|knowledge base", ("rag", "embeddings"), ()),
    (r"\bdocuments?\b|\bdocs\b|\bfaq|question answering|answer questions", ("rag",), ()),
    (
        r"embed|vector|similar|cluster|dedup|semantic|recommendation",
        ("embeddings",),
        (),
    ),
    (
        r"\bimages?\b|picture|\bphotos?\b|illustrat|\blogos?\b|\bdraw|artwork|poster|icon",
        ("image generation",),
        (),
    ),
    (
        r"screenshot|\bocr\b|caption|\bcharts?\b|diagram|scanned|receipt|describe (an|the|this)"
        r" (image|picture|photo)|(read|understand|analy[sz]e) (an|the|this|these) (images?|"
        r"pictures?|photos?)",
        ("vision",),
        (),
    ),
    (
        r"translat|multilingual|languages|french|german|spanish|italian|portuguese|japanese"
        r"|chinese|korean|arabic|hindi",
        ("multilingual",),
        (),
    ),
    (r"reason|\bmath|logic|analy[sz]|\bplan|complex|research|puzzle", ("reasoning",), ()),
    (
        r"extract|pars(e|ing)|\bjson\b|structured|invoice|entities|\bner\b|\bforms?\b",
        ("extraction",),
        (),
    ),
    (
        r"\bchat|assistant|conversation|customer|support|\bbot\b|chatbot|dialog",
        ("chat",),
        (),
    ),
    (r"\bagents?\b|\btools?\b|function call|api calls|workflow", ("tool use",), ()),
    (
        r"\bwriting\b|\bdraft|\bemails?\b|\bblog|copywrit|marketing|\bstor(y|ies)\b|\bessays?\b"
        r"|\barticles?\b",
        ("writing",),
        (),
    ),
    (
        r"\blong\b|\bbooks?\b|contracts?|transcripts?|\bpdfs?\b|hundreds of pages"
        r"|whole (repo|codebase|document)|entire",
        (),
        ("long_context",),
    ),
    (
        r"cheap|budget|low[- ]cost|inexpensive|afford|\bcosts?\b|high[- ]volume|millions of",
        (),
        ("cheap",),
    ),
    (
        r"offline|\bprivate|privacy|laptop|on[- ]prem|\blocal(ly)?\b|no api key|air[- ]gapped"
        r"|without (an |the )?internet|on[- ]device|confidential|my (own )?(machine|computer)",
        (),
        ("local",),
    ),
    (
        r"open[- ]source|open[- ]weights?|self[- ]host|fine[- ]tun|\bapache\b",
        (),
        ("open_weights",),
    ),
)

_COMPILED = tuple((re.compile(p), uses, needs) for p, uses, needs in TASK_KEYWORDS)


@dataclass(frozen=True)
class TaskProfile:
    """What a task description asks for, as :func:`read_task` understood it."""

    use_cases: tuple[str, ...]
    local: bool = False
    long_context: bool = False
    cheap: bool = False
    open_weights: bool = False

    def describe(self) -> str:
        parts = [", ".join(self.use_cases) or "general chat"]
        parts += [
            label
            for flag, label in (
                (self.local, "runs locally"),
                (self.long_context, "long inputs"),
                (self.cheap, "low cost"),
                (self.open_weights, "open weights"),
            )
            if flag
        ]
        return "; ".join(parts)


def read_task(description: str) -> TaskProfile:
    """The use cases and needs that the words of ``description`` name."""
    text = description.lower()
    uses: list[str] = []
    needs: set[str] = set()
    for pattern, use_cases, task_needs in _COMPILED:
        if pattern.search(text):
            uses += [u for u in use_cases if u not in uses]
            needs.update(task_needs)
    if "vision" in uses and "image generation" in uses:
        uses.remove("image generation")  # "describe this image" reads an image
    return TaskProfile(
        use_cases=tuple(uses),
        local="local" in needs,
        long_context="long_context" in needs,
        cheap="cheap" in needs,
        open_weights="open_weights" in needs,
    )


# -- filtering -----------------------------------------------------------------------


def _task_use_cases(task: str) -> set[str]:
    t = task.strip().lower()
    aliases = {"summarization": "summarisation", "embedding": "embeddings", "agents": "tool use"}
    t = aliases.get(t, t)
    if t in USE_CASES:
        return {t}
    found = set(read_task(t).use_cases)
    if not found:
        raise InvalidRequestError(
            f"No use case matches the task {task!r}; name one of: {', '.join(USE_CASES)}",
            field="task",
        )
    return found


def _within_price(model: CatalogModel, cap: float) -> bool:
    """Priced per token at most ``cap`` per million input tokens, or free to run locally."""
    if model.runs_locally:
        return True
    p = model.input_price
    return p is not None and p <= cap


def _check_non_negative(value: float | None, field: str) -> None:
    if value is not None and value < 0:
        raise InvalidRequestError(f"{field} cannot be negative (got {value})", field=field)


def filter_models(
    task: str | None = None,
    modality: str | None = None,
    min_context: int | None = None,
    max_input_price: float | None = None,
    licence: str | None = None,
    runs_locally: bool | None = None,
    kind: str | None = None,
) -> list[CatalogModel]:
    """The catalog's models that meet every condition given, in catalog order.

    ``task``: a use case ("code") or words that name some ("summarise contracts"); a
    model qualifies with any of them. ``modality``: text, image or embedding, read or
    written. ``max_input_price``: US dollars per million input tokens; models that run
    locally count as free, models priced per image or not priced do not qualify.
    ``licence``: part of the licence's name, any case ("apache", "llama 3").
    """
    _check_non_negative(min_context, "min_context")
    _check_non_negative(max_input_price, "max_input_price")
    if modality is not None and modality not in MODALITIES:
        raise InvalidRequestError(
            f"Unknown modality {modality!r}; use one of: {', '.join(MODALITIES)}",
            field="modality",
        )
    if kind is not None and kind not in KINDS:
        raise InvalidRequestError(
            f"Unknown kind {kind!r}; use one of: {', '.join(KINDS)}", field="kind"
        )
    wanted = _task_use_cases(task) if task is not None else None
    out = []
    for m in catalog():
        if wanted is not None and not wanted & set(m.use_cases):
            continue
        if modality is not None and modality not in (*m.modalities_in, *m.modalities_out):
            continue
        if min_context is not None and (m.context is None or m.context < min_context):
            continue
        if max_input_price is not None and not _within_price(m, max_input_price):
            continue
        if licence is not None and licence.strip().lower() not in m.licence.lower():
            continue
        if runs_locally is not None and m.runs_locally != runs_locally:
            continue
        if kind is not None and m.kind != kind:
            continue
        out.append(m)
    return out


# -- recommending --------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """A candidate model, its fit score (higher is better) and the reasons for it."""

    model: CatalogModel
    score: float
    matched: tuple[str, ...]
    reasons: tuple[str, ...]

    def explain(self) -> str:
        return "; ".join(self.reasons)


def _tokens(n: int) -> str:
    if n < 1000:
        return f"{n} tokens"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return f"{round(n / 1000)}k"


def _price_words(m: CatalogModel) -> str:
    p = m.price
    if p is None:
        return "no per-token cost when run locally" if m.runs_locally else "no listed price"
    if p.image is not None:
        words = f"${p.image:g} per image"
    elif p.output:
        words = f"${p.input:g}/M input, ${p.output:g}/M output"
    else:
        words = f"${p.input:g}/M input"
    host = {"bedrock": "Bedrock", "openai": "OpenAI"}.get(p.api, p.api)
    return words + (f" on {host}, free when run locally" if m.runs_locally else "")


def _bytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _cost_level(m: CatalogModel) -> float | None:
    """log10(1 + price): 0 for free, about 1.2 for $15/M input; images on a per-100 scale."""
    p = m.price
    if p is None:
        return None
    if p.image is not None:
        return math.log10(1 + 100 * p.image)
    return math.log10(1 + p.input)


# A hosted model with no listed price is assumed to cost about $3 per million input tokens.
_UNLISTED_COST_LEVEL = math.log10(1 + 3.0)


def _score(m: CatalogModel, profile: TaskProfile, wanted: tuple[str, ...]) -> Recommendation:
    matched = tuple(u for u in wanted if u in m.use_cases)
    missing = [u for u in wanted if u not in m.use_cases]
    reasons: list[str] = []
    score = 2.0 * len(matched) + 0.5 * sum(1 for u in matched if u in m.use_cases[:2])
    if matched:
        reasons.append("matches: " + ", ".join(matched))
    if missing:
        reasons.append("not listed for: " + ", ".join(missing))
    score += 0.6 * m.tier

    # Cost: what a call costs, or nothing on your own machine.
    level = _cost_level(m)
    if m.runs_locally and (profile.local or level is None):
        level = 0.0
    if level is None:
        level = _UNLISTED_COST_LEVEL
    score -= (3.0 if profile.cheap else 0.8) * level
    if profile.cheap and level == 0.0:
        score += 1.0
    reasons.append(_price_words(m))

    # Local: an offline task needs open weights on this machine; smaller runs faster.
    if m.runs_locally:
        where = f"installed with outcrop as {m.id}" if m.installed_with_outcrop else "runs locally"
        if m.parameters and m.kind == "image":
            where += f" (≈{_bytes(m.parameters * 2)} of weights at fp16)"
        elif m.parameters:
            where += f" (≈{_bytes(m.parameters * 0.5)} of weights at 4-bit)"
        reasons.append(where)
    if profile.local:
        if m.runs_locally:
            score += 3.0
            score -= 0.5 * math.log10(max(m.parameters or 1e9, 1e8) / 1e9)
            if m.installed_with_outcrop:
                score += 0.5
        else:
            score -= 2.0
            reasons.append("needs a network and an API key")

    # Context: long inputs want a long window; log2 so 8k → 0, 128k → 4, 200k → 4.6.
    if m.context is not None and m.kind == "image":
        reasons.append(f"prompts up to {m.context} tokens")
    elif m.context is not None:
        reasons.append(f"{_tokens(m.context)} context")
    if profile.long_context:
        score += max(-2.0, math.log2(m.context / 8192)) if m.context else -1.0

    if profile.open_weights:
        if m.open_weights:
            score += 1.5
            reasons.append(f"open weights ({m.licence})")
        else:
            score -= 1.5
            reasons.append("closed weights")
    return Recommendation(model=m, score=round(score, 2), matched=matched, reasons=tuple(reasons))


def recommend(
    description: str,
    *,
    budget_per_million: float | None = None,
    runs_locally: bool | None = None,
    min_context: int | None = None,
    top: int = 5,
) -> list[Recommendation]:
    """The catalog's best ``top`` models for the task described, best first, with reasons.

    Hard constraints drop models: ``budget_per_million`` (US dollars per million input
    tokens; local models count as free, unpriced hosted ones are dropped),
    ``runs_locally`` (True: only local models; False: only hosted ones), ``min_context``.
    A model must match at least one use case the description names (general chat when
    it names none). The rest is ranked by :func:`read_task`'s reading of the words.
    """
    _check_non_negative(budget_per_million, "budget_per_million")
    if min_context is not None and min_context <= 0:
        raise InvalidRequestError(
            f"min_context must be above 0 (got {min_context})", field="min_context"
        )
    if top < 1:
        raise InvalidRequestError(f"top must be at least 1 (got {top})", field="top")
    profile = read_task(description)
    if runs_locally:
        profile = replace(profile, local=True)
    wanted = profile.use_cases or ("chat",)
    ranked = []
    for m in catalog():
        if not set(wanted) & set(m.use_cases):
            continue
        if runs_locally is not None and m.runs_locally != runs_locally:
            continue
        if min_context is not None and (m.context is None or m.context < min_context):
            continue
        if budget_per_million is not None and not _within_price(m, budget_per_million):
            continue
        ranked.append(_score(m, profile, wanted))
    ranked.sort(key=lambda r: (-r.score, r.model.name))
    return ranked[:top]
