"""What the CLI commands share: the lazily built gateway, option parsing, output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from ..errors import InvalidRequestError
from ..gateway import Gateway
from ..types import ChatOptions, validation_error

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """Per-invocation state: the gateway is built only when a command needs it."""

    def __init__(self) -> None:
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway()
        return self._gateway

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


class DefaultGroup(click.Group):
    """A group that runs ``default_command`` when the first argument names no subcommand.

    ``outcrop "question"`` runs ``prompt``; ``outcrop logs -n 5`` runs ``logs list -n 5``.
    """

    default_command = "list"

    def default_args(self, args: list[str]) -> list[str]:
        if not args:
            return [self.default_command]
        if args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            return [self.default_command, *args]
        return args

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = self.default_args(args)
        return super().parse_args(ctx, args)


def parse_options(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Turn ``-o key value`` pairs into validated generation options."""
    raw: dict[str, Any] = {}
    for key, value in pairs:
        key = key.replace("-", "_")
        if key not in ChatOptions.model_fields:
            known = ", ".join(ChatOptions.model_fields)
            raise InvalidRequestError(f"Unknown option {key!r}; options: {known}", field=key)
        if key == "stop":
            raw.setdefault("stop", []).append(value)
        else:
            raw[key] = value
    try:
        options = ChatOptions.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, "option") from None
    return options.model_dump(exclude_unset=True)


def options_help() -> str:
    lines = []
    for name, field in ChatOptions.model_fields.items():
        lines.append(f"{name}: {field.description}")
    return "; ".join(lines)


def model_options(fn: F) -> F:
    """The options every command that calls a model takes."""
    fn = click.option(
        "-o",
        "--option",
        "options",
        type=(str, str),
        multiple=True,
        metavar="KEY VALUE",
        help="Generation option, repeatable. " + options_help(),
    )(fn)
    fn = click.option("-s", "--system", help="System prompt.")(fn)
    fn = click.option(
        "-m", "--model", help="Model id or alias (default: outcrop.toml, else local:smollm2-135m)."
    )(fn)
    return fn


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
