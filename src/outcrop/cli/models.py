"""``outcrop models``: which models are installed and usable."""

from __future__ import annotations

from typing import Any

import click

from ._common import Ctx, DefaultGroup, echo_json, pass_ctx


@click.group(cls=DefaultGroup)
def models() -> None:
    """The models outcrop can use (default: list)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--catalog", "all_", is_flag=True, help="The whole catalog, not only usable models.")
@click.option("--task", help="A use case: summarisation, rag, code, classification, chat, …")
@click.option("--modality", help="An input or output: text, image, embedding.")
@click.option("--kind", type=click.Choice(["chat", "embedding", "image"]))
@click.option("--min-context", type=click.IntRange(1), help="At least this many tokens.")
@click.option("--max-price", type=click.FloatRange(0), help="USD per million input tokens.")
@click.option("--licence", help="Licence contains this text, e.g. apache.")
@click.option("--local", "runs_locally", is_flag=True, default=None, help="Runs on a laptop.")
@pass_ctx
def list_models(
    obj: Ctx,
    as_json: bool,
    all_: bool,
    task: str | None,
    modality: str | None,
    kind: str | None,
    min_context: int | None,
    max_price: float | None,
    licence: str | None,
    runs_locally: bool | None,
) -> None:
    """List models: installed ones first, with how to install the rest. With --catalog or
    any filter: the catalog of foundation models, with use cases and prices.

    \b
    Examples:
      outcrop models list --json
      outcrop models list --task code --local
      outcrop models list --catalog --min-context 100000 --max-price 1
    """
    filters = (task, modality, kind, min_context, max_price, licence, runs_locally)
    if all_ or any(f is not None for f in filters):
        from ..catalog.models import filter_models

        found = filter_models(
            task=task,
            modality=modality,
            min_context=min_context,
            max_input_price=max_price,
            licence=licence,
            runs_locally=runs_locally,
            kind=kind,
        )
        if as_json:
            echo_json([c.model_dump(mode="json") for c in found])
            return
        if not found:
            click.echo("No model in the catalog matches; loosen a filter.")
            return
        for c in found:
            params = f"{c.parameters / 1e9:.3g}B" if c.parameters else "?"
            price = f"${c.input_price:g}/M in" if c.input_price is not None else ""
            local = "local" if c.runs_locally else ""
            click.echo(
                f"{c.id:<42} {c.kind:<9} {params:>7} {(c.context or 0):>8,} ctx  "
                f"{price:<14} {local:<5} {', '.join(c.use_cases[:3])}"
            )
        return
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


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, as_json: bool) -> None:
    """One catalog model: provider, size, architecture, licence, prices, use cases, sources."""
    from ..catalog.models import find

    m = find(name)
    if as_json:
        echo_json(m.model_dump(mode="json"))
        return
    click.echo(f"{m.name}  ({', '.join(m.ids)})")
    click.echo(f"  provider   {m.provider}; {m.kind}; licence {m.licence}")
    if m.parameters:
        active = f" ({m.active_parameters / 1e9:.3g}B active)" if m.active_parameters else ""
        click.echo(f"  size       {m.parameters / 1e9:.3g}B parameters{active}")
    if m.context:
        click.echo(f"  context    {m.context:,} tokens")
    if m.architecture is not None:
        a = m.architecture
        click.echo(
            f"  shape      {a.layers} layers, hidden {a.hidden}, {a.heads} heads, "
            f"{a.kv_heads} KV heads, vocabulary {a.vocab}"
        )
    price = m.price
    if price is not None:
        from ..catalog.prices import describe

        click.echo(f"  price      {describe(price)}")
    click.echo(f"  good for   {', '.join(m.use_cases)}")
    if m.strengths:
        click.echo(f"  strengths  {m.strengths}")
    click.echo(f"  runs here  {'yes' if m.runs_locally else 'no (hosted)'}")
    for source in m.sources:
        click.echo(f"  source     {source}")


@models.command("recommend")
@click.argument("task")
@click.option("--budget", type=click.FloatRange(0), help="USD per million input tokens, at most.")
@click.option("--local", "runs_locally", is_flag=True, default=None, help="Only models run here.")
@click.option("--min-context", type=click.IntRange(1))
@click.option("-n", "--top", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option("--json", "as_json", is_flag=True)
def recommend(
    task: str,
    budget: float | None,
    runs_locally: bool | None,
    min_context: int | None,
    top: int,
    as_json: bool,
) -> None:
    """Rank catalog models for a task described in words, with the reasons.

    \b
    Examples:
      outcrop models recommend "classify support tickets offline on a laptop"
      outcrop models recommend "summarise long contracts" --budget 3
    """
    from ..catalog.models import read_task
    from ..catalog.models import recommend as rank

    picks = rank(
        task, budget_per_million=budget, runs_locally=runs_locally, min_context=min_context, top=top
    )
    if as_json:
        echo_json(
            [
                {"model": p.model.id, "name": p.model.name, "score": p.score, "reasons": p.reasons}
                for p in picks
            ]
        )
        return
    click.echo(f"Read as: {read_task(task).describe()}")
    if not picks:
        click.echo("No catalog model meets those constraints; loosen --budget or --min-context.")
        return
    for i, p in enumerate(picks, start=1):
        click.echo(f"{i}. {p.model.id}  ({p.model.name}, score {p.score:.2f})")
        click.echo(f"   {p.explain()}")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


@models.command("size")
@click.argument("model", required=False)
@click.option("--params", help="A parameter count instead of a model, e.g. 7B.")
@click.option(
    "--precision", help="fp32, fp16, bf16, int8, int4, nf4 or a GGUF type (default: as stored)."
)
@click.option("--context", type=int, help="Tokens of context (default: the model's).")
@click.option("--batch", default=1, show_default=True, type=int, help="Sequences at once.")
@click.option("--kv-cache", "kv_cache_type", default="f16", show_default=True)
@click.option("--train-seq", default=2048, show_default=True, type=int)
@click.option("--lora-rank", default=16, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def size_(
    obj: Ctx,
    model: str | None,
    params: str | None,
    precision: str | None,
    context: int | None,
    batch: int,
    kv_cache_type: str,
    train_seq: int,
    lora_rank: int,
    as_json: bool,
) -> None:
    """Memory to run and fine-tune a model, and whether it fits on common GPUs and here.

    MODEL is a catalog name, a local model id, or a path to a GGUF, config.json or
    safetensors file.

    \b
    Examples:
      outcrop models size local:smollm2-135m
      outcrop models size llama-3.1-8b --precision q4_k_m --context 32768
      outcrop models size --params 7B --precision fp16
      outcrop models size ./config.json
    """
    from pathlib import Path

    from ..catalog.sizing import size
    from ..errors import InvalidRequestError

    if (model is None) == (params is None):
        raise InvalidRequestError("Give a MODEL or --params (one of them), e.g. --params 7B")
    target: Any
    if params is not None:
        target = params
    elif Path(model or "").exists() or (model or "").endswith((".gguf", ".json", ".safetensors")):
        target = model
    elif (model or "").startswith("local:"):
        provider = obj.gateway.resolve(model).provider
        target = str(provider.model_path(model.split(":", 1)[1]))  # type: ignore[attr-defined, union-attr]
    else:
        from ..catalog.models import find

        target = find(model or "").sizing_architecture()
    report = size(
        target,
        precision=precision,
        context=context,
        batch=batch,
        kv_cache_type=kv_cache_type,
        train_seq=train_seq,
        lora_rank=lora_rank,
    )
    if as_json:
        echo_json(report.to_dict())
        return
    a = report.architecture
    click.echo(f"{a.name or model or params}: {a.params / 1e9:.3g}B parameters ({a.source})")
    click.echo("\nTo run it")
    click.echo(f"  weights ({report.precision})".ljust(34) + _gib(report.weights))
    kv = (
        f"{_gib(report.kv_cache)}  ({report.kv_per_token / 1024:,.0f} KiB a token × "
        f"{report.context:,} tokens × {report.batch})"
        if report.kv_per_token
        else "unknown"
    )
    click.echo(f"  KV cache ({report.kv_cache_type})".ljust(34) + kv)
    click.echo("  working memory (llama.cpp)".ljust(34) + _gib(report.working))
    click.echo("  total".ljust(34) + _gib(report.inference_total))
    click.echo("\nTo fine-tune it (sequence length " + f"{train_seq:,})")
    click.echo("  full, mixed-precision Adam".ljust(34) + _gib(report.training_full))
    click.echo(
        "  … with activation checkpointing".ljust(34) + _gib(report.training_full_checkpointed)
    )
    click.echo(f"  LoRA (rank {lora_rank})".ljust(34) + _gib(report.training_lora))
    click.echo(f"  QLoRA (rank {lora_rank}, 4-bit base)".ljust(34) + _gib(report.training_qlora))
    click.echo(
        f"\nThe course's rule of thumb: {a.params / 1e9:.3g}B × 4 bytes = "
        f"{report.rule_of_thumb_weights / 1e9:,.1f} GB of fp32 weights, × 20 = "
        f"{report.rule_of_thumb_training / 1e9:,.0f} GB to train. The figures above differ "
        "because they use the precision asked for, add the KV cache and working memory, and "
        "count training as 16 bytes a parameter plus activations."
    )
    click.echo("\nFits?                 run   LoRA  QLoRA full  tokens/s (bandwidth bound)")
    for f in report.fits:
        marks = "  ".join(
            f"{'yes' if x else 'no':<4}" for x in (f.inference, f.lora, f.qlora, f.full_training)
        )
        tps = f"{f.tokens_per_s:,.0f}" if f.tokens_per_s else "—"
        click.echo(f"  {f.device:<20} {marks}  {tps}")
    for note in report.notes:
        click.echo(f"note: {note}")
