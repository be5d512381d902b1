"""``outcrop models``: which models are installed and usable."""

from __future__ import annotations

import click

from ._common import Ctx, DefaultGroup, echo_json, pass_ctx


@click.group(cls=DefaultGroup)
def models() -> None:
    """The models outcrop can use (default: list)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def list_models(obj: Ctx, as_json: bool) -> None:
    """List models: installed ones first, with how to install the rest.

    \b
    Example:
      outcrop models list --json
    """
    gateway = obj.gateway
    infos = sorted(gateway.models(), key=lambda m: (m.remote, not m.installed, m.id))
    default = gateway.settings.default_model
    if as_json:
        echo_json(
            [
                {
                    "id": m.id,
                    "installed": m.installed,
                    "remote": m.remote,
                    "default": m.id == default,
                    "description": m.description,
                    "how_to_install": m.how_to_install,
                    **m.details,
                }
                for m in infos
            ]
        )
        return
    width = max(len(m.id) for m in infos)
    for m in infos:
        mark = "*" if m.id == default else " "
        if m.remote:
            state = "remote" if m.installed else f"remote — {m.how_to_install}"
        else:
            state = "installed" if m.installed else f"not installed — {m.how_to_install}"
        click.echo(f"{mark} {m.id:<{width}}  {m.description}  [{state}]")
    click.echo(
        "\n* the default model. Any GGUF file works too: -m local:/path/to/model.gguf\n"
        "Any model of an OpenAI-compatible server: add [endpoints.NAME] to outcrop.toml, "
        "then -m NAME:model. Prices: catalog/data/prices.toml (dated, with sources)."
    )
    if gateway.settings.aliases:
        click.echo(
            "Aliases: " + ", ".join(f"{a} → {t}" for a, t in gateway.settings.aliases.items())
        )
