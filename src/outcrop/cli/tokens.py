"""``outcrop tokens``: see how a model splits text into tokens, and what they cost."""

from __future__ import annotations

import sys

import click

from ..errors import InvalidRequestError
from ._common import Ctx, echo_json, pass_ctx

_COLOURS = ["cyan", "yellow", "green", "magenta"]


@click.command(
    epilog="""\b
Examples:
  outcrop tokens "Tokenization splits text into pieces."
  outcrop tokens --ids "naïve café" -m local:qwen2.5-coder-0.5b
  cat notes.txt | outcrop tokens --json
"""
)
@click.argument("text", required=False)
@click.option("-m", "--model", help="Model whose tokenizer to use (default: your default model).")
@click.option("--ids", is_flag=True, help="Show each token's id.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def tokens(obj: Ctx, text: str | None, model: str | None, ids: bool, as_json: bool) -> None:
    """Show how a model splits TEXT into tokens: each token marked, the count, the share
    of the context window and the cost at the model's price."""
    if text is None:
        stdin = sys.stdin
        text = stdin.read() if stdin is not None and not stdin.isatty() else ""
    if not text:
        raise InvalidRequestError(
            'Give text to tokenize, e.g. outcrop tokens "Hello world", or pipe it in.',
            field="text",
        )
    view = obj.gateway.tokenize(text, model)
    pieces, count, estimated = view.pieces, view.tokens, view.estimated
    window, cost = view.context_window, view.cost_usd
    if as_json:
        echo_json(
            {
                "model": view.model,
                "tokens": count,
                "estimated": estimated,
                "pieces": [{"id": i, "text": p} for i, p in pieces] if pieces is not None else None,
                "context_window": window,
                "share_of_context": count / window if window else None,
                "cost_usd_as_input": cost,
            }
        )
        return
    if pieces is None:
        click.secho(
            f"{view.model} has no tokenizer outcrop can run here; the count is an estimate "
            "(about four characters a token).",
            fg="yellow",
        )
    else:
        for n, (token_id, piece) in enumerate(pieces):
            shown = piece.replace("\n", "↵\n")
            label = f"{shown}[{token_id}]" if ids else shown
            click.secho(label, fg=_COLOURS[n % len(_COLOURS)], nl=False, reverse=True)
        click.echo()
    line = f"{'~' if estimated else ''}{count} tokens on {view.model}, {len(text)} characters"
    if window:
        line += f"; {count / window:.2%} of its {window:,}-token context window"
    if cost is not None:
        line += f"; ${cost:.6f} as input"
    click.echo(line)
