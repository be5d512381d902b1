"""Guardrail policies and the guard that applies them at the four points of the pipeline.

Points: ``input`` (the newest user turn), ``output`` (the model's answer),
``retrieved`` (a passage before it enters a prompt) and ``tool`` (a tool's
result before it returns to the model). At each point a policy names an
action per check: ``allow``, ``flag`` (record only), ``mask`` (replace what
matched) or ``block``. Every decision is returned — and recorded on the trace
by the gateway — with the check, what matched and what was done.

In ``outcrop.toml``::

    [guardrails]
    message = "Sorry, I can't help with that."
    input = {pii = "mask", injection = "block", topics = "block", patterns = "block"}
    output = {pii = "mask", grounding = "flag"}
    retrieved = {injection = "block"}
    tool = {injection = "block", pii = "mask"}

    [guardrails.pii]
    entities = ["email", "phone", "card", "iban", "ip", "secret", "us_ssn", "uk_nino"]

    [[guardrails.topics]]
    name = "medical advice"
    description = "Diagnosing illness or recommending medication or doses."
    examples = ["What dose of ibuprofen should I take?", "Do I have the flu?"]
    threshold = 0.55

    [[guardrails.patterns]]
    name = "competitors"
    words = ["AcmeCorp", "Globex"]
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, InvalidRequestError
from .pii import ENTITIES, find_pii, mask_pii

__all__ = ["Decision", "Guard", "GuardPolicy", "GuardResult", "Point"]

Point = Literal["input", "output", "retrieved", "tool"]
Action = Literal["allow", "flag", "mask", "block"]
CHECKS = ("pii", "injection", "topics", "patterns", "grounding")
MAX_CHARS = 200_000  # longer texts are checked on their first and last parts


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointPolicy(_Model):
    pii: Action = "allow"
    injection: Action = "allow"
    topics: Action = "allow"
    patterns: Action = "allow"
    grounding: Action = "allow"

    @model_validator(mode="after")
    def _maskable(self) -> PointPolicy:
        for check in ("injection", "topics", "grounding"):
            if getattr(self, check) == "mask":
                raise ValueError(f"{check} cannot mask (nothing to cut out): use flag or block")
        return self


class PiiPolicy(_Model):
    entities: list[str] = Field(default_factory=lambda: list(ENTITIES))

    @field_validator("entities")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in ENTITIES:
                raise ValueError(f"unknown PII entity {name!r}; entities: {', '.join(ENTITIES)}")
        return value


class TopicPolicy(_Model):
    name: str
    description: str = ""
    examples: list[str] = Field(default_factory=list)
    threshold: float = Field(default=0.55, gt=0, le=1)

    @model_validator(mode="after")
    def _has_text(self) -> TopicPolicy:
        if not self.description and not self.examples:
            raise ValueError(f"topic {self.name!r} needs a description or examples")
        return self


class PatternPolicy(_Model):
    name: str
    pattern: str | None = None
    words: list[str] = Field(default_factory=list)
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _compiles(self) -> PatternPolicy:
        if not self.pattern and not self.words:
            raise ValueError(f"pattern filter {self.name!r} needs a pattern or words")
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern filter {self.name!r}: {self.pattern!r} is not a valid regular "
                    f"expression ({exc})"
                ) from None
        return self

    def regex(self) -> re.Pattern[str]:
        parts = [self.pattern] if self.pattern else []
        parts += [r"\b" + re.escape(w) + r"\b" for w in self.words]
        return re.compile("|".join(f"(?:{p})" for p in parts), 0 if self.case_sensitive else re.I)


class GuardPolicy(_Model):
    message: str = "Sorry, I can't help with that request."
    input: PointPolicy = Field(default_factory=PointPolicy)
    output: PointPolicy = Field(default_factory=PointPolicy)
    retrieved: PointPolicy = Field(default_factory=PointPolicy)
    tool: PointPolicy = Field(default_factory=PointPolicy)
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    topics: list[TopicPolicy] = Field(default_factory=list)
    patterns: list[PatternPolicy] = Field(default_factory=list)
    injection_threshold: float | None = Field(default=None, gt=0, le=1)
    grounding_threshold: float = Field(default=0.5, gt=0, le=1)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "[guardrails]") -> GuardPolicy:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            raise InvalidRequestError(f"{where} {loc}: {msg}", field=loc) from None

    def active(self) -> bool:
        return any(
            getattr(getattr(self, point), check) != "allow"
            for point in ("input", "output", "retrieved", "tool")
            for check in CHECKS
        )


@dataclass
class Decision:
    point: str
    check: str  # pii, injection, topics, patterns, grounding
    action: str  # flag, mask, block
    matched: str  # what matched, shortened (PII values are not repeated here)
    score: float | None = None


@dataclass
class GuardResult:
    action: str  # allow, flag, mask, block (the strongest decision)
    text: str  # the text to use (masked where a check masked)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(d) for d in self.decisions]


_STRENGTH = {"allow": 0, "flag": 1, "mask": 2, "block": 3}


def _clip(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_CHARS:
        return text, False
    half = MAX_CHARS // 2
    return text[:half] + "\n…\n" + text[-half:], True


class Guard:
    """Applies a :class:`GuardPolicy`. Models (embedder, injection bank) load on first need."""

    def __init__(self, policy: GuardPolicy, *, embedder: Any = None):
        self.policy = policy
        self._embedder = embedder
        self._lock = threading.Lock()
        self._topic_vectors: Any = None
        self._injection: Any = None
        self._patterns = [(p.name, p.regex()) for p in policy.patterns]

    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from ..embeddings import LocalEmbedder

                self._embedder = LocalEmbedder()
            return self._embedder

    def _injection_detector(self) -> Any:
        with self._lock:
            if self._injection is None:
                from .injection import InjectionDetector

                kwargs: dict[str, Any] = {}
                if self.policy.injection_threshold is not None:
                    kwargs["threshold"] = self.policy.injection_threshold
                self._injection = InjectionDetector(embedder=self._embedder, **kwargs)
            return self._injection

    def _topics(self, text: str) -> list[tuple[str, float]]:
        import numpy as np

        if not self.policy.topics:
            return []
        embedder = self.embedder()
        if self._topic_vectors is None:
            vectors = []
            for topic in self.policy.topics:
                texts = [t for t in [topic.description, *topic.examples] if t]
                vectors.append(np.asarray(embedder.embed(texts), dtype=np.float32))
            self._topic_vectors = vectors
        query = np.asarray(embedder.embed([text[:2000]]), dtype=np.float32)[0]
        hits = []
        for topic, vectors in zip(self.policy.topics, self._topic_vectors, strict=True):
            norms = np.linalg.norm(vectors, axis=1) * (np.linalg.norm(query) or 1.0)
            similarity = float(np.max(vectors @ query / np.where(norms == 0, 1.0, norms)))
            if similarity >= topic.threshold:
                hits.append((topic.name, similarity))
        return hits

    def check(self, text: str, point: Point, *, context: str | None = None) -> GuardResult:
        """Apply the policy for ``point`` to ``text`` (``context``: retrieved passages, for
        the grounding check of an output)."""
        rules: PointPolicy = getattr(self.policy, point)
        decisions: list[Decision] = []
        examined, clipped = _clip(text)
        out = text
        if rules.pii != "allow":
            matches = find_pii(examined, self.policy.pii.entities)
            if matches:
                kinds = sorted({m.entity for m in matches})
                decisions.append(
                    Decision(point, "pii", rules.pii, f"{len(matches)} × {', '.join(kinds)}")
                )
                if rules.pii == "mask":
                    out = mask_pii(examined, matches) if not clipped else out
                    if clipped:  # mask the whole text in pieces: positions refer to it
                        out = mask_pii(text, find_pii(text, self.policy.pii.entities))
        if rules.patterns != "allow":
            for name, regex in self._patterns:
                found = regex.search(examined)
                if found:
                    decisions.append(
                        Decision(
                            point, "patterns", rules.patterns, f"{name}: {found.group()[:40]!r}"
                        )
                    )
                    if rules.patterns == "mask":
                        out = regex.sub("[REMOVED]", out)
        if rules.injection != "allow":
            result = self._injection_detector().check(examined)
            if result.flagged:
                decisions.append(
                    Decision(
                        point,
                        "injection",
                        rules.injection,
                        "; ".join(result.reasons[:2]) or "looks like an injection",
                        round(result.score, 3),
                    )
                )
        if rules.topics != "allow":
            for name, similarity in self._topics(examined):
                decisions.append(
                    Decision(point, "topics", rules.topics, name, round(similarity, 3))
                )
        if rules.grounding != "allow" and context is not None:
            from .grounding import unsupported_sentences

            missing, share = unsupported_sentences(
                examined, context, self.embedder(), self.policy.grounding_threshold
            )
            if missing:
                decisions.append(
                    Decision(
                        point,
                        "grounding",
                        rules.grounding,
                        f"{len(missing)} sentence(s) not supported by the context: "
                        f"{missing[0][:60]!r}",
                        round(share, 3),
                    )
                )
        action = max((d.action for d in decisions), key=lambda a: _STRENGTH[a], default="allow")
        if action == "block":
            out = self.policy.message if point in ("input", "output") else ""
        return GuardResult(action=action, text=out, decisions=decisions)


def load_policy(data: dict[str, Any] | None, path: Any = None) -> GuardPolicy | None:
    """The policy of outcrop.toml's ``[guardrails]`` (None when there is none)."""
    if not data:
        return None
    try:
        return GuardPolicy.from_mapping(data)
    except InvalidRequestError as exc:
        raise ConfigError(str(exc), path=path) from None
