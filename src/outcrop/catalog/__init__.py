"""Choosing a foundation model: the catalog (use cases, architectures, prices) and sizing.

Names load on first use, so ``import outcrop`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Architecture": "sizing",
    "SizeReport": "sizing",
    "size": "sizing",
    "CatalogModel": "models",
    "Recommendation": "models",
    "catalog": "models",
    "filter_models": "models",
    "find": "models",
    "recommend": "models",
    "Price": "prices",
    "cost": "prices",
    "image_cost": "prices",
    "price": "prices",
}

__all__ = sorted(_WHERE, key=lambda n: (0 if n[0].isupper() else 1, n))


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'outcrop.catalog' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
