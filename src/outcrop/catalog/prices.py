"""Prices of remote models, from ``data/prices.toml`` (dated, with sources)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..types import Usage

__all__ = ["Price", "cost", "describe", "image_cost", "price", "prices"]

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_REGION_PREFIX = re.compile(r"^(us|eu|apac|us-gov|global)\.")


@dataclass(frozen=True)
class Price:
    api: str
    model: str
    input: float  # USD per 1M input tokens
    output: float  # USD per 1M output tokens
    image: float | None  # USD per image
    as_of: str
    source: str


@cache
def prices() -> dict[tuple[str, str], Price]:
    text = resources.files("outcrop.catalog").joinpath("data/prices.toml").read_text("utf-8")
    data = tomllib.loads(text)
    out: dict[tuple[str, str], Price] = {}
    for api, models in data.items():
        if api == "meta":
            continue
        for model, p in models.items():
            out[(api, model)] = Price(
                api=api,
                model=model,
                input=float(p.get("input", 0.0)),
                output=float(p.get("output", 0.0)),
                image=float(p["image"]) if "image" in p else None,
                as_of=p["as_of"],
                source=p["source"],
            )
    return out


def describe(p: Price) -> str:
    """A price in words, for listings."""
    if p.image is not None:
        return f"${p.image:g} per image"
    if not p.output:
        return f"${p.input:g} per 1M input tokens"
    return f"${p.input:g} in / ${p.output:g} out per 1M tokens"


def price(api: str, model: str) -> Price | None:
    """The listed price of ``model`` on ``api`` ("openai" or "bedrock"), or None."""
    table = prices()
    for candidate in (model, _DATED.sub("", model), _REGION_PREFIX.sub("", model)):
        found = table.get((api, candidate))
        if found is not None:
            return found
    return None


def cost(api: str, model: str, usage: Usage) -> float | None:
    """US dollars for ``usage`` on ``model``; None when outcrop has no price for it."""
    p = price(api, model)
    if p is None:
        return None
    return (usage.input_tokens * p.input + usage.output_tokens * p.output) / 1_000_000


def image_cost(api: str, model: str, count: int) -> float | None:
    p = price(api, model)
    if p is None or p.image is None:
        return None
    return p.image * count
