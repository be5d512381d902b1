"""``outcrop keys``: the keys outcrop uses for remote endpoints (stored at mode 0600)."""

from __future__ import annotations

import click

from ..keys import keys_path, list_keys, remove_key, set_key
from ._common import DefaultGroup, echo_json


@click.group(cls=DefaultGroup)
def keys() -> None:
    """Keys for remote endpoints (default: list). Values are never printed.

    outcrop looks for an endpoint's key in this order: passed in Python, stored
    here, then the environment (OPENAI_API_KEY for openai, NAME_API_KEY for others).
    """


@keys.command("set")
@click.argument("name")
@click.option("--value", help="The key (default: asked for, hidden). Prefer the prompt.")
def set_(name: str, value: str | None) -> None:
    """Store the key for endpoint NAME.

    \b
    Example:
      outcrop keys set openai
    """
    if value is None:
        value = click.prompt(f"Key for {name}", hide_input=True)
    set_key(name, value)
    click.echo(f"Stored the key for {name} in {keys_path()}.")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_(as_json: bool) -> None:
    """The names that have a stored key."""
    names = list_keys()
    if as_json:
        echo_json(names)
        return
    if not names:
        click.echo("No stored keys. Add one with: outcrop keys set NAME")
        return
    for name in names:
        click.echo(name)


@keys.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget the stored key for NAME."""
    if not remove_key(name):
        raise click.ClickException(f"No stored key named {name!r}; see `outcrop keys list`.")
    click.echo(f"Removed the key for {name}.")


@keys.command("path")
def path() -> None:
    """Print where stored keys live."""
    click.echo(str(keys_path()))
