"""``outcrop kb``: knowledge bases — create, add files, search, ask with citations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidRequestError
from ._common import Ctx, DefaultGroup, echo_json, pass_ctx


def _open(obj: Ctx, name: str) -> Any:
    from ..rag import KnowledgeBase

    return KnowledgeBase.open(name, gateway=obj.gateway)


def _filters(pairs: tuple[str, ...]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequestError(
                f"--filter takes KEY=VALUE (got {pair!r}), e.g. --filter source='docs/*.md'",
                field="filter",
            )
        out[key] = value
    return out or None


@click.group(cls=DefaultGroup)
def kb() -> None:
    """Knowledge bases for retrieval-augmented generation (default: list)."""


@kb.command("create")
@click.argument("name")
@click.option(
    "--embedder",
    default="local:all-minilm-l6-v2",
    show_default=True,
    help="Embedding model; fixed for the knowledge base's life.",
)
@click.option("--chunk-tokens", default=200, show_default=True, type=click.IntRange(16, 2048))
@click.option("--chunk-overlap", default=32, show_default=True, type=click.IntRange(0, 1024))
@pass_ctx
def create(obj: Ctx, name: str, embedder: str, chunk_tokens: int, chunk_overlap: int) -> None:
    """Create an empty knowledge base.

    \b
    Example:
      outcrop kb create handbook
    """
    from ..rag import KnowledgeBase

    base = KnowledgeBase.create(
        name,
        embedder=embedder,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        gateway=obj.gateway,
    )
    click.echo(f"Created {name} ({base.store.path}). Next: outcrop kb add {name} PATH")


@kb.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def list_(obj: Ctx, as_json: bool) -> None:
    """Every knowledge base, with its size."""
    from ..rag import kb_names

    infos = []
    for name in kb_names():
        base = _open(obj, name)
        infos.append(base.info())
        base.close()
    if as_json:
        echo_json(infos)
        return
    if not infos:
        click.echo("No knowledge bases yet. Create one: outcrop kb create NAME")
        return
    for i in infos:
        click.echo(
            f"{i['name']:<20} {i['documents']:>6} documents {i['chunks']:>7} chunks  "
            f"{i['embedder']}"
        )


@kb.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def info(obj: Ctx, name: str, as_json: bool) -> None:
    """A knowledge base's settings and size."""
    data = _open(obj, name).info()
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key}: {value}")


@kb.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--include", multiple=True, help="Glob of files to take, e.g. '**/*.md'.")
@click.option("--exclude", multiple=True, help="Glob of files to skip, e.g. 'drafts/**'.")
@click.option(
    "--max-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.001, 10_000),
    help="Refuse files larger than this.",
)
@click.option(
    "--json-field", default="text", show_default=True, help="JSON/JSONL field that holds the text."
)
@click.option("--csv-column", "csv_columns", multiple=True, help="CSV column(s) to index.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def add(
    obj: Ctx,
    name: str,
    path: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_mb: float,
    json_field: str,
    csv_columns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a file or folder. Re-adding a folder indexes only what changed and removes
    what disappeared; a file that fails to load is reported and skipped.

    \b
    Example:
      outcrop kb add handbook docs/ --include '**/*.md' --exclude 'drafts/**'
    """
    from ..rag import LoadOptions

    base = _open(obj, name)
    options = LoadOptions(
        include=list(include),
        exclude=list(exclude),
        max_bytes=int(max_mb * 1024 * 1024),
        json_field=json_field,
        csv_columns=list(csv_columns) or None,
    )
    if as_json:
        report = base.add(path, options)
        echo_json(report.to_dict())
        return
    bars: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            make: Any = click.progressbar
            bars.append(make(length=total, label="Indexing", file=sys.stderr))
            bars[0].__enter__()
        bars[0].update(1)

    try:
        report = base.add(path, options, progress=progress)
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
    for problem in report.problems:
        click.secho(f"skipped {problem.path}: {problem.reason}", fg="yellow", err=True)
    click.echo(
        f"{name}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{report.unchanged} unchanged, {len(report.removed)} removed, "
        f"{len(report.problems)} skipped; {report.chunks} chunks, {report.tokens:,} tokens "
        f"in {report.seconds:.1f} s"
    )


@kb.command("search")
@click.argument("name")
@click.argument("query")
@click.option("-k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--mode", type=click.Choice(["hybrid", "dense", "bm25"]), default="hybrid", show_default=True
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only documents whose KEY matches (source takes a glob).",
)
@click.option("--mmr", type=click.FloatRange(0, 1), help="Diversity: λ for MMR (1 = relevance).")
@click.option("--rerank", "rerank_model", help="Re-rank with this local model's Yes/No judgement.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def search(
    obj: Ctx,
    name: str,
    query: str,
    k: int,
    mode: str,
    filters: tuple[str, ...],
    mmr: float | None,
    rerank_model: str | None,
    as_json: bool,
) -> None:
    """The chunks that best match QUERY, with the score of every stage.

    \b
    Example:
      outcrop kb search handbook "reset a password" --filter source='docs/*'
    """
    from ..rag import LLMReranker

    base = _open(obj, name)
    rerank = LLMReranker(obj.gateway, rerank_model) if rerank_model else None
    results = base.search(query, k=k, mode=mode, filters=_filters(filters), mmr=mmr, rerank=rerank)
    if as_json:
        echo_json([r.to_dict() for r in results])
        return
    if not results:
        click.echo("Nothing found.")
        return
    for n, r in enumerate(results, 1):
        stages = ", ".join(f"{k} {v:.3f}" for k, v in r.scores.items() if not k.endswith("_rank"))
        where = r.chunk.source + (
            f" › {' › '.join(r.chunk.heading_path)}" if r.chunk.heading_path else ""
        )
        click.secho(f"[{n}] {where}  ({stages})", fg="cyan")
        text = " ".join(r.chunk.text.split())
        click.echo("    " + (text[:300] + "…" if len(text) > 300 else text))


@kb.command("ask")
@click.argument("name")
@click.argument("question")
@click.option("-m", "--model", help="Model that writes the answer.")
@click.option("-k", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def ask(obj: Ctx, name: str, question: str, model: str | None, k: int, as_json: bool) -> None:
    """Answer QUESTION from the knowledge base, citing sources as [n].

    \b
    Example:
      outcrop kb ask handbook "How do I reset my password?" -m local:qwen2.5-coder-0.5b
    """
    answer = _open(obj, name).ask(question, model=model, k=k)
    if as_json:
        echo_json(answer.to_dict())
        return
    click.echo(answer.text.strip())
    if answer.citations:
        click.echo()
        for c in answer.citations:
            click.secho(
                f"[{c.number}] {c.source} (chunk {c.chunk}, characters {c.start}–{c.end})",
                fg="cyan",
            )
    elif answer.found:
        click.secho("(the answer cites no source)", fg="yellow")


@kb.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(name: str, yes: bool) -> None:
    """Delete a knowledge base and everything in it."""
    from ..rag import KnowledgeBase

    if not yes:
        click.confirm(f"Delete the knowledge base {name!r}?", abort=True)
    KnowledgeBase.remove(name)
    click.echo(f"Removed {name}.")
