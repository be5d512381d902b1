"""Guardrails on every path: PII, denied topics, word and pattern filters, prompt injection
and grounding — on user input, model output, retrieved passages and tool results."""

from .guard import Decision, Guard, GuardPolicy, GuardResult
from .pii import ENTITIES, PiiMatch, find_pii, mask_pii

__all__ = [
    "ENTITIES",
    "Decision",
    "Guard",
    "GuardPolicy",
    "GuardResult",
    "PiiMatch",
    "find_pii",
    "mask_pii",
]
