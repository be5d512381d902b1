"""``outcrop keys``: the keys outcrop uses for remote endpoints (stored at mode 0600)."""

from __future__ import annotations

import click

from ..keys import keys_path, list_keys, remove_key, set_key
from ._common import Ctx, DefaultGroup, echo_json, pass_ctx


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
@click.option("--api", is_flag=True, help="List the server's API keys (outcrop keys create).")
@pass_ctx
def list_(obj: Ctx, as_json: bool, api: bool) -> None:
    """The endpoint names that have a stored key; --api: the server's API keys."""
    if api:
        from ..serve.keys import list_api_keys

        found = list_api_keys(obj.gateway.store)
        if as_json:
            echo_json([k.to_dict() for k in found])
            return
        if not found:
            click.echo("No API keys. Create one with: outcrop keys create NAME")
            return
        for k in found:
            limits = ", ".join(f"{n}={v}" for n, v in k.to_dict()["limits"].items()) or "no limits"
            click.echo(f"{k.name:<20} {k.prefix}…  models={','.join(k.models)}  {limits}")
        return
    names = list_keys()
    if as_json:
        echo_json(names)
        return
    if not names:
        click.echo("No stored keys. Add one with: outcrop keys set NAME")
        return
    for name in names:
        click.echo(name)


@keys.command("create")
@click.argument("name")
@click.option("--model", "models", multiple=True, help="Models it may use (glob; default all).")
@click.option("--kb", "kbs", multiple=True, help="Knowledge bases it may use (glob; default all).")
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1), help="Tokens per minute.")
@click.option("--tokens-per-day", type=click.IntRange(1))
@click.option("--tokens-per-month", type=click.IntRange(1))
@click.option("--usd-per-day", type=click.FloatRange(min=0, min_open=True))
@click.option("--usd-per-month", type=click.FloatRange(min=0, min_open=True))
@pass_ctx
def create(
    obj: Ctx,
    name: str,
    models: tuple[str, ...],
    kbs: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    tokens_per_day: int | None,
    tokens_per_month: int | None,
    usd_per_day: float | None,
    usd_per_month: float | None,
) -> None:
    """Create an API key for `outcrop serve`; it is shown once (only its hash is stored).

    \b
    Examples:
      outcrop keys create app
      outcrop keys create intern --model 'local:*' --rpm 30 --tokens-per-day 100000
    """
    from ..serve.keys import KeyLimits, create_key

    limits = KeyLimits(
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        tokens_per_day=tokens_per_day,
        tokens_per_month=tokens_per_month,
        usd_per_day=usd_per_day,
        usd_per_month=usd_per_month,
    )
    key, secret = create_key(
        obj.gateway.store, name, models=list(models), knowledge_bases=list(kbs), limits=limits
    )
    click.echo(secret)
    click.echo(
        f"Created API key {key.name!r}. It is shown only now; the server keeps its hash. From "
        "now on `outcrop serve` needs a key on every request but /health.",
        err=True,
    )


@keys.command("revoke")
@click.argument("name")
@pass_ctx
def revoke(obj: Ctx, name: str) -> None:
    """Revoke the API key NAME (at once, also on a running server)."""
    import time

    if not obj.gateway.store.revoke_api_key(name, time.time()):
        raise click.ClickException(
            f"No live API key named {name!r}; see `outcrop keys list --api`."
        )
    click.echo(f"Revoked the API key {name}.")


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
