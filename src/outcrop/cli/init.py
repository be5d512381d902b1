"""``outcrop init``: write an outcrop.toml for a project."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import CONFIG_FILENAME, render_default_config
from ..errors import UserError


@click.command()
@click.argument(
    "folder", default=".", type=click.Path(file_okay=False, path_type=Path), required=False
)
@click.option("--force", is_flag=True, help="Overwrite an existing outcrop.toml.")
def init(folder: Path, force: bool) -> None:
    """Start an outcrop project: write outcrop.toml with commented defaults.

    \b
    Example:
      outcrop init my-app
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILENAME
    if path.exists() and not force:
        raise UserError(
            f"{path} already exists; edit it, or run `outcrop init --force` to replace it."
        )
    path.write_text(render_default_config(), encoding="utf-8")
    click.echo(f'Wrote {path}. Try: outcrop "What is a token?"')
