"""Providers: one module per API shape. Only the gateway calls them."""

from .base import ModelInfo, Provider

__all__ = ["ModelInfo", "Provider"]
