"""Chains: break a complex task into steps, each a prompt whose output feeds the next.

A chain is a named list of steps. Step *n* sees the chain's variables and the
outputs of the steps before it (text, or parsed JSON when the step's prompt
asks for JSON), each under the step's ``output`` name. The chain is one trace;
every step's call is a child of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import InvalidRequestError
from ..types import ChatResponse, Usage

if TYPE_CHECKING:
    from ..gateway import Gateway
    from .versions import PromptRegistry

__all__ = ["Chain", "ChainResult", "Step"]


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="A prompt reference: name, name@3 or name@label.")
    output: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of its output.")
    model: str | None = None


class Chain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    steps: list[Step] = Field(min_length=1)
    model: str | None = None

    @model_validator(mode="after")
    def _unique_outputs(self) -> Chain:
        names = [s.output for s in self.steps]
        if len(names) != len(set(names)):
            raise ValueError("each step needs its own output name")
        return self

    def run(
        self,
        gateway: Gateway,
        registry: PromptRegistry,
        variables: dict[str, Any] | None = None,
        *,
        model: str | None = None,
    ) -> ChainResult:
        """Run every step in order; returns each step's output and response."""
        from ..gateway import TraceInfo, new_id
        from ..observe.store import TraceRow

        chain_id = new_id()
        started, t0 = time.time(), time.perf_counter()
        values: dict[str, Any] = dict(variables or {})
        result = ChainResult(trace_id=chain_id)
        status, error = "ok", None
        registry.sync()
        used: set[str] = set()
        for step in self.steps:
            used |= registry.get(step.prompt).prompt.used_variables()
        unknown = sorted(set(values) - used)
        if unknown:
            raise InvalidRequestError(
                f"Unknown variable {', '.join(repr(u) for u in unknown)}: no step of the chain "
                f"uses it. The steps use: {', '.join(sorted(used)) or 'no variables'}.",
                field="variables",
            )
        try:
            for i, step in enumerate(self.steps):
                version = registry.get(step.prompt)
                prompt = version.prompt
                used = prompt.used_variables()
                step_values = {k: v for k, v in values.items() if k in used}
                step_values = {
                    k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v
                    for k, v in step_values.items()
                }
                request = prompt.request(step_values, model=step.model or model or self.model)
                response = gateway.chat(
                    request,
                    trace=TraceInfo(
                        parent_id=chain_id,
                        prompt_name=version.name,
                        prompt_version=version.version,
                    ),
                )
                output: Any = response.text
                if prompt.output.format == "json":
                    try:
                        output = json.loads(response.text)
                    except json.JSONDecodeError:
                        raise InvalidRequestError(
                            f"Step {i + 1} ({step.prompt}) should answer JSON but did not: "
                            f"{response.text[:200]!r}",
                            field=f"steps[{i}]",
                        ) from None
                values[step.output] = output
                result.outputs[step.output] = output
                result.responses.append(response)
                result.usage = result.usage + response.usage
        except BaseException as exc:
            status, error = "error", f"{exc.__class__.__name__}: {exc}"
            raise
        finally:
            cost = sum(r.cost_usd or 0.0 for r in result.responses)
            gateway.store.record(
                TraceRow(
                    id=chain_id,
                    kind="chain",
                    started_at=started,
                    requested_model=model or self.model or gateway.settings.default_model,
                    model=result.responses[-1].model if result.responses else None,
                    stream=False,
                    status=status,
                    input_tokens=result.usage.input_tokens,
                    output_tokens=result.usage.output_tokens,
                    latency_ms=(time.perf_counter() - t0) * 1000,
                    cost_usd=cost,
                    error=error,
                    request={"chain": self.name, "variables": _jsonable(variables or {})},
                    response=json.dumps(_jsonable(result.outputs), ensure_ascii=False),
                    prompt_name=self.name,
                )
            )
        return result


@dataclass
class ChainResult:
    trace_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    responses: list[ChatResponse] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    @property
    def final(self) -> Any:
        """The last step's output."""
        return list(self.outputs.values())[-1] if self.outputs else None


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)
