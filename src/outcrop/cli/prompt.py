"""``outcrop "question"`` (the default command) and ``outcrop chat``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import InvalidRequestError
from ..gateway import ChatStream
from ..types import Message
from ._common import Ctx, echo_json, model_options, parse_options, pass_ctx


def _clean(text: str) -> str:
    """Bytes that were not UTF-8 (kept as surrogates by Python) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _print_stream(stream: ChatStream) -> Message | None:
    """Print a stream as it arrives; Ctrl-C stops it cleanly. Returns the answer, if it finished."""
    try:
        for event in stream:
            if event.type == "text":
                click.echo(event.text, nl=False)
            elif event.type == "tool_call" and event.tool_call is not None:
                call = event.tool_call
                click.secho(f"\n[tool call] {call.name}({call.arguments})", fg="cyan", nl=False)
    except KeyboardInterrupt:
        stream.close()
        click.secho("\n[stopped]", fg="yellow", err=True)
        return None
    finally:
        stream.close()
    click.echo()
    response = stream.response
    if response is not None and response.finish_reason == "length":
        click.secho(
            f"[stopped at max_tokens: {response.usage.output_tokens} tokens; "
            "raise it with -o max_tokens N]",
            fg="yellow",
            err=True,
        )
    return response.message if response is not None else None


@click.command(
    epilog="""\b
Examples:
  outcrop "What is a token?"
  outcrop -m local:qwen2.5-coder-0.5b -s "Answer in one sentence." "What is RAG?"
  outcrop -o temperature 0 -o max_tokens 50 "Name three planets"
  echo "Summarise: ..." | outcrop
  outcrop --json "What is an embedding?"
"""
)
@click.argument("text", nargs=-1)
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the whole response as JSON.")
@pass_ctx
def prompt(
    obj: Ctx,
    text: tuple[str, ...],
    model: str | None,
    system: str | None,
    options: tuple[tuple[str, str], ...],
    as_json: bool,
) -> None:
    """Send one prompt to a model and stream the answer (the default command)."""
    question = _clean(" ".join(text))
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty():
        piped = _clean(stdin.read())
        question = f"{piped}\n\n{question}" if question and piped.strip() else piped or question
    if not question.strip():
        raise InvalidRequestError(
            'The prompt is empty: give a question, e.g. outcrop "What is a token?", '
            "or pipe text into outcrop.",
            field="prompt",
        )
    opts = parse_options(options)
    gateway = obj.gateway
    if as_json:
        response = gateway.chat(question, model=model, system=system, **opts)
        echo_json(response.model_dump(mode="json"))
        return
    stream = gateway.stream(question, model=model, system=system, **opts)
    if _print_stream(stream) is None:
        sys.exit(130)


@click.command(
    epilog="""\b
In the chat: /exit (or Ctrl-D) leaves, /reset forgets the conversation,
Ctrl-C stops an answer that is being written.
"""
)
@model_options
@pass_ctx
def chat(
    obj: Ctx, model: str | None, system: str | None, options: tuple[tuple[str, str], ...]
) -> None:
    """Talk with a model over several turns; the whole conversation is its context."""
    opts: dict[str, Any] = parse_options(options)
    gateway = obj.gateway
    resolved = gateway.resolve(model)
    history: list[Message] = [Message.system(system)] if system else []
    click.secho(
        f"Chatting with {resolved.id}. /exit or Ctrl-D to leave, /reset to start over.",
        fg="green",
    )
    while True:
        try:
            line = click.prompt("", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.exceptions.Abort):
            click.echo()
            return
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit", "/bye"):
            return
        if command == "/reset":
            history = [Message.system(system)] if system else []
            click.secho("(conversation forgotten)", fg="green")
            continue
        if command == "/help":
            click.echo("/exit leaves, /reset forgets the conversation, Ctrl-C stops an answer.")
            continue
        history.append(Message.user(_clean(line)))
        stream = gateway.stream(history, model=model, **opts)
        answer = _print_stream(stream)
        if answer is None:
            history.pop()  # the question went unanswered; do not keep half an exchange
            continue
        history.append(answer)
