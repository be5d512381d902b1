"""``outcrop kb``: knowledge bases — create, add files, search, ask with citations, copy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidRequestError, UserError
from ..rag.kb import DEFAULT_EMBEDDER
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
    default=DEFAULT_EMBEDDER,
    show_default=True,
    help="Embedding model; fixed for the knowledge base's life.",
)
@click.option("--chunk-tokens", default=200, show_default=True, type=click.IntRange(16, 2048))
@click.option("--chunk-overlap", default=32, show_default=True, type=click.IntRange(0, 1024))
@click.option(
    "--engine",
    type=click.Choice(["sqlite", "postgres"]),
    help="Where it lives (default: postgres when OUTCROP_DATABASE_URL is a PostgreSQL URL, "
    "else sqlite).",
)
@click.option("--url", help="PostgreSQL URL (postgres engine), e.g. postgresql://user@host/db.")
@pass_ctx
def create(
    obj: Ctx,
    name: str,
    embedder: str,
    chunk_tokens: int,
    chunk_overlap: int,
    engine: str | None,
    url: str | None,
) -> None:
    """Create an empty knowledge base.

    \b
    Examples:
      outcrop kb create handbook
      outcrop kb create handbook --engine postgres --url postgresql://kb@db.internal/outcrop
    """
    from ..rag import KnowledgeBase

    base = KnowledgeBase.create(
        name,
        embedder=embedder,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        gateway=obj.gateway,
        engine=engine,
        url=url,
    )
    click.echo(
        f"Created {name} on {base.engine} ({base.store.location}). Next: outcrop kb add {name} PATH"
    )


@kb.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def list_(obj: Ctx, as_json: bool) -> None:
    """Every knowledge base of every engine, with its size."""
    from ..rag import KnowledgeBase, kb_names

    infos = []
    for name in kb_names():
        try:
            base = KnowledgeBase.open(name, gateway=obj.gateway, unfinished_ok=True)
        except UserError as exc:  # one knowledge base out of reach does not hide the others
            infos.append({"name": name, "error": str(exc)})
            continue
        infos.append(base.info())
        base.close()
    if as_json:
        echo_json(infos)
        return
    if not infos:
        click.echo("No knowledge bases yet. Create one: outcrop kb create NAME")
        return
    for i in infos:
        if "error" in i:
            click.secho(f"{i['name']:<20} unavailable: {i['error']}", fg="yellow")
            continue
        click.echo(
            f"{i['name']:<20} {i['engine']:<8} {i['documents']:>6} documents "
            f"{i['chunks']:>7} chunks  {i['embedder']}"
            + ("" if i["complete"] else "  (unfinished copy)")
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


_RERANK_HELP = (
    "Re-rank the top 20: sentences (best-matching sentence, the knowledge base's embedder), "
    "llm, or a local model id for the LLM's Yes/No judgement."
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
@click.option("--rerank", metavar="NAME", help=_RERANK_HELP)
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
    rerank: str | None,
    as_json: bool,
) -> None:
    """The chunks that best match QUERY, with the score of every stage.

    \b
    Example:
      outcrop kb search handbook "reset a password" --filter source='docs/*'
    """
    base = _open(obj, name)
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
@click.option("--rerank", metavar="NAME", help=_RERANK_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def ask(
    obj: Ctx, name: str, question: str, model: str | None, k: int, rerank: str | None, as_json: bool
) -> None:
    """Answer QUESTION from the knowledge base, citing sources as [n].

    \b
    Example:
      outcrop kb ask handbook "How do I reset my password?" -m local:qwen2.5-coder-0.5b
    """
    answer = _open(obj, name).ask(question, model=model, k=k, rerank=rerank)
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


@kb.command("copy")
@click.argument("source")
@click.argument("target")
@click.option(
    "--engine",
    type=click.Choice(["sqlite", "postgres"]),
    help="Engine of the copy (default: as for kb create).",
)
@click.option("--to-url", "url", help="PostgreSQL URL of the copy (implies --engine postgres).")
@click.option("--replace", is_flag=True, help="Overwrite TARGET if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the copy's info as JSON.")
@pass_ctx
def copy(
    obj: Ctx,
    source: str,
    target: str,
    engine: str | None,
    url: str | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Copy SOURCE to a new knowledge base TARGET, on another engine if asked: documents,
    chunks and vectors, nothing re-embedded. An interrupted copy is marked unfinished;
    run the same command again to finish it.

    \b
    Examples:
      outcrop kb copy handbook handbook-pg --to-url postgresql://kb@db.internal/outcrop
      outcrop kb copy handbook-pg handbook-local --engine sqlite
    """
    from ..rag import KnowledgeBase

    bars: list[Any] = []

    def progress(done: int, total: int) -> None:
        if as_json:
            return
        if not bars:
            make: Any = click.progressbar
            bars.append(make(length=total, label=f"Copying {source}", file=sys.stderr))
            bars[0].__enter__()
        bars[0].update(done - bars[0].pos)

    try:
        base = KnowledgeBase.copy(
            source,
            target,
            engine=engine,
            url=url,
            replace=replace,
            gateway=obj.gateway,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
    data = base.info()
    base.close()
    if as_json:
        echo_json(data)
        return
    click.echo(
        f"Copied {source} to {target} on {data['engine']} ({data['path']}): "
        f"{data['documents']} documents, {data['chunks']} chunks."
    )


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
