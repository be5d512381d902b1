"""``outcrop migrate``: bring the store's database up to this outcrop's schema."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import home, load_settings
from ..observe.engines import check_database_url
from ..observe.store import Store
from ._common import echo_json


def _target(url: str | None) -> Path | str:
    """--url, else OUTCROP_DATABASE_URL or outcrop.toml's [storage] database_url, else
    outcrop.db in outcrop's home."""
    if url is not None:
        try:
            return check_database_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--url'") from None
    configured = load_settings().storage.database_url
    return configured if configured else home() / "outcrop.db"


@click.command()
@click.option("--status", is_flag=True, help="List applied and pending migrations; change nothing.")
@click.option(
    "--url",
    metavar="URL",
    help="The database (default: OUTCROP_DATABASE_URL, else [storage] database_url in "
    "outcrop.toml, else outcrop.db in outcrop's home).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def migrate(status: bool, url: str | None, as_json: bool) -> None:
    """Apply the store's pending migrations (traces, ledger, prompts, evals, keys).

    Opening the store applies them too; run this to do it before a deploy, or to see
    where a database stands. Replicas that start together wait for each other:
    each migration runs once.

    \b
    Examples:
      outcrop migrate --status
      OUTCROP_DATABASE_URL=postgresql://outcrop@db:5432/outcrop outcrop migrate
      outcrop migrate --url sqlite:///outcrop.db
    """
    store = Store(_target(url), migrate=False)
    try:
        if status:
            rows = store.migration_status()
            if as_json:
                echo_json({"database": store.url, "migrations": rows})
                return
            click.echo(f"Database: {store.url}")
            for row in rows:
                when = row["applied_at"] or ""
                note = "  (not known to this outcrop: a newer one applied it)"
                click.echo(
                    f"  {row['status']:<8} {row['name']:<24} {when}"
                    + (note if row["status"] == "unknown" else "")
                )
            pending = sum(row["status"] == "pending" for row in rows)
            click.echo(
                f"{pending} pending: run `outcrop migrate` to apply them."
                if pending
                else "Up to date."
            )
            return
        applied = store.migrate()
        if as_json:
            echo_json({"database": store.url, "applied": applied})
            return
        if not applied:
            click.echo(f"{store.url} is up to date; nothing to apply.")
            return
        click.echo(f"Applied {len(applied)} migration(s) to {store.url}:")
        for name in applied:
            click.echo(f"  {name}")
    finally:
        store.close()
