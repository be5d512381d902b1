"""The ``outcrop`` command. Errors become messages here, and only here.

Set ``OUTCROP_RAISE_ERRORS=1`` to let exceptions propagate with their traceback.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any

import click

from ..errors import OutcropError
from ._common import Ctx, DefaultGroup
from .agent import agent
from .eval import eval_
from .guard import guard
from .image import image
from .init import init
from .kb import kb
from .keys import keys
from .logs import logs, usage
from .migrate import migrate
from .models import models
from .prompt import chat, prompt
from .prompts import prompts
from .serve import serve
from .tokens import tokens

__all__ = ["cli", "main"]


class _Root(DefaultGroup):
    """The root group: its default command is ``prompt``, so ``outcrop "question"`` works."""

    default_command = "prompt"

    def default_args(self, args: list[str]) -> list[str]:
        if not args and (sys.stdin is None or sys.stdin.isatty()):
            return args  # a bare `outcrop` at a terminal shows the help
        return super().default_args(args)


@click.group(
    cls=_Root,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  outcrop "What is a token?"          ask the default local model
  outcrop -m local:qwen2.5-coder-0.5b -o temperature 0 "Write a haiku"
  outcrop chat                        a conversation
  outcrop logs                        the calls you made, with tokens and latency
""",
)
@click.version_option(package_name="outcrop")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """outcrop — build a generative-AI application on one laptop, no API key needed.

    With no command, the arguments are a prompt for the default model.
    """
    ctx.obj = Ctx()
    ctx.call_on_close(ctx.obj.close)


cli.add_command(prompt)
cli.add_command(chat)
cli.add_command(models)
cli.add_command(logs)
cli.add_command(usage)
cli.add_command(init)
cli.add_command(keys)
cli.add_command(image)
cli.add_command(prompts)
cli.add_command(tokens)
cli.add_command(kb)
cli.add_command(agent)
cli.add_command(eval_)
cli.add_command(serve)
cli.add_command(guard)
cli.add_command(migrate)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning outcrop's errors into one clear line."""
    raise_errors = os.environ.get("OUTCROP_RAISE_ERRORS") == "1"
    try:
        return cli.main(args=argv, prog_name="outcrop", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OutcropError as exc:
        if raise_errors:
            raise
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        if raise_errors:
            raise
        click.echo("\nInterrupted.", err=True)
        sys.exit(130)
    except (OSError, sqlite3.Error) as exc:
        # The machine said no (a path, a permission, a damaged database): one line, not a trace.
        if raise_errors:
            raise
        click.secho(f"Error: {exc.__class__.__name__}: {exc}", fg="red", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(0)
