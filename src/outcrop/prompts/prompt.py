"""The anatomy of a prompt as an object you can write, check, render and run.

The course names eight parts — query, instructions, objective, persona,
constraints, examples, context, tone — plus system instructions, an output
format (free text or a JSON schema) and asking the model to explain its
reasoning. :class:`Prompt` holds each as a field; :meth:`Prompt.render` turns
them into chat messages for any model:

- system message: system instructions, persona, objective, instructions,
  constraints, tone, the output format and the reasoning request, in that order;
- examples: one user/assistant pair each (few-shot);
- last user message: the context, then the query.

Text fields are Jinja2 templates in a sandbox: ``{{ question }}``. A variable
the templates use but nobody gave, or one given but used nowhere, is an error
that says which (and "Did you mean …?" for a typo).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Literal

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import InvalidRequestError
from ..types import ChatOptions, ChatRequest, Message, ResponseFormat

__all__ = ["Example", "OutputFormat", "Prompt", "Variable", "render_template"]

ANATOMY = (
    "query",
    "instructions",
    "objective",
    "persona",
    "constraints",
    "examples",
    "context",
    "tone",
)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with power bounded so a template cannot hang the process."""

    intercepted_binops = frozenset({"**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and (abs(right) > 100 or abs(left) > 1e6):
            raise SecurityError("power too large")
        return super().call_binop(context, operator, left, right)


_env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Example(_Model):
    """One worked example: what goes in, and the answer you want back."""

    input: str
    output: str


class OutputFormat(_Model):
    """Free text, or JSON matching a schema (grammar-constrained on local models)."""

    format: Literal["text", "json"] = "text"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = Field(
        default=None, description="The shape of a text answer, e.g. 'three bullet points'."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _schema_for_json(self) -> OutputFormat:
        if self.schema_ is not None and self.format != "json":
            raise ValueError("a schema needs format = 'json'")
        return self


class Variable(_Model):
    """A declared variable: what it is for, and a default."""

    description: str = ""
    default: str | None = None


class Prompt(_Model):
    """A prompt by its parts. Every text field may use ``{{ variables }}``."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    # The anatomy.
    query: str = Field(description="The question or task itself.")
    instructions: str | None = Field(default=None, description="What to do, step by step.")
    objective: str | None = Field(default=None, description="The goal the answer serves.")
    persona: str | None = Field(default=None, description="Who the model speaks as.")
    constraints: list[str] = Field(default_factory=list, description="Limits the answer keeps.")
    examples: list[Example] = Field(default_factory=list, description="Worked examples.")
    context: str | None = Field(default=None, description="Facts the answer draws on.")
    tone: str | None = Field(default=None, description="How the answer sounds.")
    # Beyond the eight parts.
    system: str | None = Field(default=None, description="System instructions, first of all.")
    output: OutputFormat = Field(default_factory=OutputFormat)
    reasoning: bool = Field(default=False, description="Ask the model to explain its reasoning.")
    task: Literal["factual", "creative", "classification", "extraction", "other"] | None = None
    variables: dict[str, Variable] = Field(default_factory=dict)
    model: str | None = Field(default=None, description="The model this prompt is written for.")
    options: ChatOptions = Field(default_factory=ChatOptions)

    # -- variables ----------------------------------------------------------

    def _templates(self) -> dict[str, str]:
        """Every template in the prompt, by where it sits (for messages naming the field)."""
        out: dict[str, str] = {}
        for field in ("query", "instructions", "objective", "persona", "context", "tone", "system"):
            value = getattr(self, field)
            if value:
                out[field] = value
        for i, c in enumerate(self.constraints):
            out[f"constraints[{i}]"] = c
        for i, e in enumerate(self.examples):
            out[f"examples[{i}].input"] = e.input
            out[f"examples[{i}].output"] = e.output
        if self.output.description:
            out["output.description"] = self.output.description
        return out

    def used_variables(self) -> set[str]:
        """The variables the templates refer to."""
        names: set[str] = set()
        for where, template in self._templates().items():
            try:
                parsed = _env.parse(template)
                # Unknown filters and tests are found here, not by parse().
                names |= jinja2.meta.find_undeclared_variables(parsed)
            except jinja2.TemplateSyntaxError as exc:
                raise InvalidRequestError(
                    f"{where}: template error on its line {exc.lineno}: {exc.message}",
                    field=where,
                ) from None
        return names

    def bind(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Declared defaults, overridden by ``values``; checked against what is used."""
        given = dict(values or {})
        used = self.used_variables()
        unused = sorted(set(given) - used)
        if unused:
            suggestions = [
                f"Did you mean {close[0]!r} for {name!r}?"
                for name in unused
                if (close := difflib.get_close_matches(name, sorted(used), n=1, cutoff=0.6))
            ]
            uses = ", ".join(sorted(used)) or "no variables"
            raise InvalidRequestError(
                f"Unknown variable {', '.join(repr(n) for n in unused)}: the prompt"
                f"{' ' + repr(self.name) if self.name else ''} does not use it. "
                + " ".join(suggestions)
                + f" The prompt uses: {uses}.",
                field="variables",
            )
        bound = {k: v.default for k, v in self.variables.items() if v.default is not None}
        bound.update(given)
        missing = sorted(used - set(bound))
        if missing:
            raise InvalidRequestError(
                f"Missing variable {', '.join(repr(n) for n in missing)}: give it with "
                "--var NAME=VALUE (Python: a dict of values) or a default under [variables].",
                field="variables",
            )
        return bound

    # -- rendering ----------------------------------------------------------

    def system_text(self, values: dict[str, Any]) -> str:
        parts: list[str] = []
        if self.system:
            parts.append(render_template(self.system, values, "system"))
        if self.persona:
            parts.append(f"You are {render_template(self.persona, values, 'persona')}.")
        if self.objective:
            parts.append(f"Objective: {render_template(self.objective, values, 'objective')}")
        if self.instructions:
            parts.append(
                f"Instructions:\n{render_template(self.instructions, values, 'instructions')}"
            )
        if self.constraints:
            lines = [
                f"- {render_template(c, values, f'constraints[{i}]')}"
                for i, c in enumerate(self.constraints)
            ]
            parts.append("Constraints:\n" + "\n".join(lines))
        if self.tone:
            parts.append(f"Tone: {render_template(self.tone, values, 'tone')}.")
        fmt = self.output
        if fmt.format == "json":
            text = "Answer with JSON only"
            if fmt.schema_:
                text += " that matches this JSON schema:\n" + json.dumps(self.json_schema())
            parts.append(text + ".")
        elif fmt.description:
            parts.append(
                f"Output format: {render_template(fmt.description, values, 'output.description')}"
            )
        if self.reasoning:
            if fmt.format == "json":
                parts.append(
                    "Explain your reasoning step by step in the 'reasoning' field, "
                    "before the answer."
                )
            else:
                parts.append(
                    "Think step by step: explain your reasoning first, then give the final "
                    "answer on a last line that starts with 'Answer:'."
                )
        return "\n\n".join(p.strip() for p in parts if p.strip())

    def json_schema(self) -> dict[str, Any] | None:
        """The schema the answer must match (with a leading 'reasoning' field if asked)."""
        if self.output.format != "json":
            return None
        schema = dict(self.output.schema_ or {"type": "object"})
        if self.reasoning and schema.get("type") == "object":
            properties = {"reasoning": {"type": "string"}, **schema.get("properties", {})}
            required = ["reasoning", *[r for r in schema.get("required", []) if r != "reasoning"]]
            schema = {**schema, "properties": properties, "required": required}
        return schema

    def messages(self, values: dict[str, Any] | None = None) -> list[Message]:
        """The chat messages this prompt becomes, with ``values`` for its variables."""
        bound = self.bind(values)
        out: list[Message] = []
        system = self.system_text(bound)
        if system:
            out.append(Message.system(system))
        for i, example in enumerate(self.examples):
            out.append(Message.user(render_template(example.input, bound, f"examples[{i}].input")))
            out.append(
                Message.assistant(render_template(example.output, bound, f"examples[{i}].output"))
            )
        query = render_template(self.query, bound, "query")
        if self.context:
            context = render_template(self.context, bound, "context")
            query = f"Context:\n{context}\n\nQuestion: {query}" if context.strip() else query
        if not query.strip():
            raise InvalidRequestError("The query renders to empty text.", field="query")
        out.append(Message.user(query))
        return out

    def request(
        self, values: dict[str, Any] | None = None, *, model: str | None = None, **options: Any
    ) -> ChatRequest:
        """A ready ChatRequest: messages, the prompt's options, its output format."""
        data: dict[str, Any] = self.options.model_dump(exclude_defaults=True)
        data.update({k: v for k, v in options.items() if v is not None})
        schema = self.json_schema()
        if schema is not None:
            data["response_format"] = ResponseFormat(type="json_schema", json_schema=schema)
        return ChatRequest(model=model or self.model, messages=self.messages(values), **data)

    # -- identity -----------------------------------------------------------

    def canonical(self) -> str:
        """The prompt as canonical JSON: what a version's hash is taken over."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode("utf-8")).hexdigest()

    def parts(self) -> dict[str, bool]:
        """Which anatomy parts this prompt fills."""
        return {part: bool(getattr(self, part)) for part in ANATOMY}


def render_template(template: str, values: dict[str, Any], where: str = "template") -> str:
    """Render one sandboxed Jinja2 template; errors name the field."""
    try:
        return _env.from_string(template).render(**values)
    except jinja2.UndefinedError as exc:
        raise InvalidRequestError(f"{where}: {exc.message}", field=where) from None
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidRequestError(
            f"{where}: template error on its line {exc.lineno}: {exc.message}", field=where
        ) from None
    except jinja2.TemplateError as exc:  # the sandbox refusing unsafe access, among others
        raise InvalidRequestError(f"{where}: {exc}", field=where) from None
    except Exception as exc:  # the template's own arithmetic: 1/0, "3" + 1, huge ranges
        raise InvalidRequestError(
            f"{where}: the template failed ({exc.__class__.__name__}: {exc})", field=where
        ) from None
