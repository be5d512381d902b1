"""``outcrop image``: generate images with a remote image model."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import Ctx, echo_json, pass_ctx


@click.command(
    epilog="""\b
Examples:
  outcrop image "a lighthouse at dawn" -m bedrock:amazon.titan-image-generator-v1
  outcrop image "a red fox" -m bedrock:stability.stable-diffusion-xl-v1 --size 1024x1024 -n 2
  outcrop image "a cat" -m openai:dall-e-3 -d pictures/
"""
)
@click.argument("prompt")
@click.option(
    "-m",
    "--model",
    required=True,
    help="An image model, e.g. bedrock:amazon.titan-image-generator-v1.",
)
@click.option("--size", default="1024x1024", show_default=True, help="WIDTHxHEIGHT.")
@click.option("-n", "--count", default=1, show_default=True, type=click.IntRange(1, 10))
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Seed, where the model takes one.")
@click.option(
    "-d",
    "--dir",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the image files.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def image(
    obj: Ctx,
    prompt: str,
    model: str,
    size: str,
    count: int,
    seed: int | None,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Generate images from PROMPT and save them; every call is traced like a chat."""
    result = obj.gateway.generate_image(
        prompt, model=model, size=size, count=count, seed=seed, out_dir=out_dir
    )
    if as_json:
        echo_json(result.model_dump(mode="json"))
        return
    for path in result.paths:
        click.echo(str(path))
    if result.cost_usd is not None:
        click.echo(f"cost: ${result.cost_usd:.4f}", err=True)
