"""Foundation-model catalog data: prices now; use cases and sizing as they land."""

from .prices import Price, cost, image_cost, price

__all__ = ["Price", "cost", "image_cost", "price"]
