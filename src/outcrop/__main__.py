"""``python -m outcrop`` runs the CLI."""

from .cli import main

main()
