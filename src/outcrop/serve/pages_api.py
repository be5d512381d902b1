"""The API behind the web UI's Knowledge and Models pages: what ``outcrop kb`` and
``outcrop models`` offer, over HTTP.

Knowledge bases: list, create, one base's documents, upload files (multipart, one
or more at once) and delete a document. An upload is written to a temporary folder
and read by the same loaders as ``outcrop kb add``; each file is reported as
added, updated, unchanged or skipped with the reason. A file that cannot be read
(unsupported, corrupt, empty, binary, too large) is skipped and nothing already
stored changes.

Catalog: the foundation-model catalog with the CLI's filters, one model, the
recommender, and the sizing calculator (:func:`outcrop.catalog.sizing.size`). The
calculator reads no file of the server: a model comes from the catalog, or the
request gives a parameter count.

With API keys, every route needs one; the knowledge-base routes also check the
key's knowledge-base scope, and routes that embed check its model scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import re
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..catalog.models import KINDS, MODALITIES, USE_CASES, CatalogArchitecture, Packaged
from ..errors import UnknownModelError, UserError
from ..rag.kb import DEFAULT_EMBEDDER

if TYPE_CHECKING:
    from ..catalog.models import CatalogModel
    from ..rag import KnowledgeBase, LoadedDocument, LoadOptions
    from .app import ApiError, _Server
    from .keys import ApiKey

__all__ = ["UPLOAD_ORIGIN", "pages_router"]

# The origin uploaded documents are filed under (documents the CLI adds: their folder's path).
UPLOAD_ORIGIN = "upload"
MAX_FILES = 100  # files in one upload
DEFAULT_FILE_MB = 20.0  # the largest file taken, as `outcrop kb add --max-mb`
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PARAMS = 1e14  # parameters: above any model there is (100 trillion)
_MIN_PARAMS = 1e5


class _AnyText(PathConvertor):
    """A path parameter that may hold anything, "/" and line breaks included (a document's
    source, a catalog id): Starlette's ``path`` stops at a line break, and the request would
    fall through to "No such endpoint"."""

    regex = "(?s:.*)"


register_url_convertor("outcrop_text", _AnyText())


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# -- knowledge bases: bodies and answers ------------------------------------------------


class KBCreate(_Body):
    name: str = Field(
        min_length=1, description="Lowercase letters, digits, '-' and '_'; 64 at most."
    )
    embedder: str = Field(
        default=DEFAULT_EMBEDDER,
        min_length=1,
        description="The embedding model; fixed for the knowledge base's life.",
    )
    chunk_tokens: int = Field(default=200, ge=16, le=2048)
    chunk_overlap: int = Field(default=32, ge=0, le=1024)


class KBInfo(BaseModel):
    name: str
    engine: str | None = Field(description="sqlite or postgres.")
    embedder: str | None
    documents: int
    chunks: int
    tokens: int
    chunk_tokens: int | None
    chunk_overlap: int | None
    size_bytes: int | None = Field(description="The knowledge base's files (SQLite) on disk.")
    error: str | None = Field(
        default=None, description="Why the knowledge base cannot be read, if it cannot."
    )


class UploadLimits(BaseModel):
    max_body_bytes: int = Field(description="The largest request the server takes.")
    max_file_bytes: int = Field(description="The largest file an upload takes by default.")
    max_files: int = Field(description="Files in one upload, at most.")
    types: list[str] = Field(description="The file types the loaders read.")


class KBList(BaseModel):
    object: Literal["list"]
    data: list[KBInfo]
    upload: UploadLimits


class KBDocument(BaseModel):
    source: str
    title: str | None
    type: str | None
    chunks: int
    pages: int | None
    uploaded: bool = Field(description="Uploaded through the API (else added from a folder).")
    added_at: float


class KBDetail(KBInfo):
    documents_list: list[KBDocument] = Field(description="The documents, by source.")


class UploadedFile(BaseModel):
    file: str = Field(description="The file name as sent.")
    status: Literal["added", "updated", "unchanged", "skipped"]
    documents: int = Field(description="Documents the file gave (JSON, JSONL, CSV: one a record).")
    reason: str | None = Field(description="Why a skipped file was skipped.")


class UploadReport(BaseModel):
    files: list[UploadedFile]
    added: int
    updated: int
    unchanged: int
    skipped: int
    chunks: int = Field(description="Chunks written.")
    tokens: int
    seconds: float
    knowledge_base: KBInfo


class DocumentDeleted(BaseModel):
    deleted: str
    documents: int = Field(description="Documents removed (one per folder that held it).")
    knowledge_base: KBInfo


# -- catalog: answers -------------------------------------------------------------------


class PriceOut(BaseModel):
    api: str
    input: float = Field(description="US dollars per million input tokens.")
    output: float = Field(description="US dollars per million output tokens.")
    image: float | None = Field(description="US dollars per image.")
    as_of: str
    source: str
    text: str


class CatalogEntry(BaseModel):
    id: str
    name: str
    ids: list[str]
    provider: str
    kind: str
    parameters: int | None
    active_parameters: int | None
    context: int | None
    dimensions: int | None
    modalities_in: list[str]
    modalities_out: list[str]
    licence: str
    open_weights: bool
    runs_locally: bool
    installed_with_outcrop: bool
    tier: int
    use_cases: list[str]
    strengths: str
    price: PriceOut | None
    approximate: list[str]
    notes: str
    architecture: CatalogArchitecture | None
    packaged: Packaged | None
    sources: dict[str, str]


class CatalogList(BaseModel):
    object: Literal["list"]
    as_of: str = Field(description="The date the catalog's figures were last checked.")
    data: list[CatalogEntry]
    use_cases: list[str]
    modalities: list[str]
    kinds: list[str]


class RecommendationOut(BaseModel):
    model: str
    name: str
    score: float
    reasons: list[str]
    entry: CatalogEntry


class RecommendationList(BaseModel):
    object: Literal["list"]
    read_as: str = Field(description="How the task's words were read.")
    data: list[RecommendationOut]


class SizeRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "llama-3.1-8b", "precision": "q4_k_m", "context": 8192},
                {"params": "7B", "precision": "fp16"},
            ]
        }
    )

    model: str | None = Field(
        default=None, min_length=1, max_length=200, description="A catalog id or name."
    )
    params: str | float | None = Field(
        default=None, description='A parameter count instead of a model: "7B", "135M", 7e9.'
    )
    precision: str | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="fp32, fp16, bf16, int8, int4, nf4 or a GGUF type (default fp16).",
    )
    context: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Tokens (default: the model's)."
    )
    batch: int = Field(default=1, ge=1, le=4096, description="Sequences at once.")
    kv_cache_type: str = Field(default="f16", min_length=1, max_length=20)
    train_seq: int = Field(default=2048, ge=1, le=1_000_000)
    lora_rank: int = Field(default=16, ge=1, le=4096)


class SizeArchitecture(BaseModel):
    params: float
    name: str | None = None
    active_params: float | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    context: int | None = None
    vocab: int | None = None
    intermediate: int | None = None
    source: str


class SizeFit(BaseModel):
    device: str
    memory_gb: float
    inference: bool
    lora: bool
    qlora: bool
    full_training: bool
    tokens_per_s: float | None = Field(description="Memory-bandwidth bound on decoding.")


class SizeOut(BaseModel):
    """Bytes; ``rule_of_thumb_*`` is the course's estimate, beside the precise figures."""

    architecture: SizeArchitecture
    precision: str
    context: int
    batch: int
    kv_cache_type: str
    weights: float
    kv_cache: float
    kv_per_token: float | None
    working: float
    inference_total: float
    training_full: float
    training_full_checkpointed: float
    training_lora: float
    training_qlora: float
    lora_params: float
    rule_of_thumb_weights: float
    rule_of_thumb_training: float
    notes: list[str]
    fits: list[SizeFit]


class SizeChoices(BaseModel):
    precisions: list[str]
    kv_cache_types: list[str]
    gpus: list[str]


# -- helpers ------------------------------------------------------------------------------


def _entry(m: CatalogModel) -> dict[str, Any]:
    from ..catalog.prices import describe

    data = m.model_dump(mode="json", exclude={"price_id"})
    p = m.price
    data["id"] = m.id
    data["installed_with_outcrop"] = m.installed_with_outcrop
    data["price"] = (
        None
        if p is None
        else {
            "api": p.api,
            "input": p.input,
            "output": p.output,
            "image": p.image,
            "as_of": p.as_of,
            "source": p.source,
            "text": describe(p),
        }
    )
    return data


def _size_on_disk(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += Path(f"{path}{suffix}").stat().st_size
    return total


def _info(base: KnowledgeBase) -> dict[str, Any]:
    info = base.info()
    engine = str(info.get("engine", "sqlite"))
    return {
        "name": base.name,
        "engine": engine,
        "embedder": info["embedder"],
        "documents": info["documents"],
        "chunks": info["chunks"],
        "tokens": info["tokens"],
        "chunk_tokens": info["chunk_tokens"],
        "chunk_overlap": info["chunk_overlap"],
        "size_bytes": _size_on_disk(Path(info["path"])) if engine == "sqlite" else None,
        "error": None,
    }


def _file_name(sent: str | None) -> tuple[str, str | None]:
    """The name to file an upload under (no folders), or why it cannot be used."""
    raw = sent or ""
    name = PurePosixPath(raw.replace("\\", "/")).name.strip()
    if not name or name in (".", ".."):
        return raw, "the file has no name; send it with a file name such as notes.md"
    if _CONTROL.search(name):
        return raw, "the file name has control characters; rename the file"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return raw, "the file name is not valid Unicode; rename the file"
    if len(encoded) > 255:
        return raw, "the file name is longer than 255 bytes; rename the file"
    return name, None


# Files whose loaders make one document per record, named "FILE#N".
_RECORD_FILES = {".csv", ".tsv", ".json", ".jsonl"}


def _record_of(source: str, name: str) -> bool:
    """Whether ``source`` is a record of the uploaded file ``name`` ("faq.csv#3"), not another
    file whose own name starts with it ("a.md#b.md")."""
    if PurePosixPath(name).suffix.lower() not in _RECORD_FILES:
        return False
    return source.startswith(name + "#") and source[len(name) + 1 :].isdigit()


def _status_of(statuses: list[str]) -> Literal["added", "updated", "unchanged"]:
    if "updated" in statuses:
        return "updated"
    if "added" in statuses:
        return "added"
    return "unchanged"


def _ingest(
    base: KnowledgeBase, files: list[tuple[str, UploadFile]], options: LoadOptions
) -> dict[str, Any]:
    """Write the uploads to a temporary folder, load each, index what loaded (a thread)."""
    from ..rag.loaders import LoadError, load_file

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    loaded: list[LoadedDocument] = []
    per_file: list[tuple[int, str, list[str]]] = []  # (index in results, name, sources)
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="outcrop-upload-") as folder:
        root = Path(folder)
        for sent, upload in files:
            name, problem = _file_name(sent)
            result: dict[str, Any] = {
                "file": sent,
                "status": "skipped",
                "documents": 0,
                "reason": problem,
            }
            results.append(result)
            if problem is not None:
                continue
            if name in seen:
                result["reason"] = f"{name} is in this upload twice; the first one was taken"
                continue
            seen.add(name)
            path = root / name
            upload.file.seek(0)
            with path.open("wb") as out:
                while block := upload.file.read(1024 * 1024):
                    out.write(block)
                    if out.tell() > options.max_bytes:
                        break  # the loader reports it as too large without reading on
            try:
                documents = load_file(path, options, root=root)
            except LoadError as exc:
                result["reason"] = exc.reason or str(exc)
                continue
            loaded.extend(documents)
            per_file.append((len(results) - 1, name, [d.source for d in documents]))
        report = base.add_documents(loaded, origin=UPLOAD_ORIGIN) if loaded else None
    status: dict[str, str] = {}
    if report is not None:
        status.update(dict.fromkeys(report.added, "added"))
        status.update(dict.fromkeys(report.updated, "updated"))
    stale: list[tuple[str, str]] = []
    if per_file:
        # A file sent again with fewer records (CSV rows, JSON items): drop the records gone.
        stored = [d.source for d in base.store.documents(UPLOAD_ORIGIN)]
        for index, name, sources in per_file:
            fresh = set(sources)
            stale += [
                (UPLOAD_ORIGIN, s)
                for s in stored
                if s not in fresh and (s == name or _record_of(s, name))
            ]
            results[index]["status"] = _status_of([status.get(s, "unchanged") for s in sources])
            results[index]["documents"] = len(sources)
        if stale:
            base.store.delete_documents(stale)
    counts = {s: sum(r["status"] == s for r in results) for s in ("added", "updated", "unchanged")}
    return {
        "files": results,
        **counts,
        "skipped": sum(r["status"] == "skipped" for r in results),
        "chunks": report.chunks if report else 0,
        "tokens": report.tokens if report else 0,
        "seconds": round(time.perf_counter() - started, 3),
        "knowledge_base": _info(base),
    }


# -- the router -----------------------------------------------------------------------------


def pages_router(server: _Server, error: type[ApiError]) -> APIRouter:
    """Routes under /v1 for the Knowledge and Models pages. ``server`` holds the gateway,
    the key check and the limits; ``error`` is the server's API error class."""
    from .app import _ERRORS

    gateway = server.gateway
    router = APIRouter(prefix="/v1")
    who = Depends(server.caller)
    exists: dict[int | str, dict[str, Any]] = {
        409: {"model": _ERRORS[400]["model"], "description": "The knowledge base exists already"}
    }
    upload_errors: dict[int | str, dict[str, Any]] = {
        **_ERRORS,
        415: {
            "model": _ERRORS[400]["model"],
            "description": "The body is not multipart/form-data",
        },
    }

    def allowed(key: ApiKey | None, name: str) -> None:
        if key is not None and not key.allows_kb(name):
            raise error(
                403,
                f"Key {key.name!r} may not use knowledge base {name!r} (it may use: "
                f"{', '.join(key.knowledge_bases)}).",
                code="kb_not_allowed",
            )

    def not_found(name: str) -> ApiError:
        from ..rag import kb_names

        names = kb_names()
        close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return error(
            404,
            f"No knowledge base named {name!r}.{hint} Knowledge bases: "
            f"{', '.join(names) or 'none'}; create one on the Knowledge page or with "
            "`outcrop kb create NAME`.",
            code="kb_not_found",
        )

    def open_kb(name: str, key: ApiKey | None) -> KnowledgeBase:
        from ..rag import KnowledgeBase, kb_names

        allowed(key, name)
        if name not in kb_names():
            raise not_found(name)
        return KnowledgeBase.open(name, gateway=gateway)

    def limits() -> dict[str, Any]:
        from ..rag.loaders import SUPPORTED

        body = server.config.max_body_bytes
        return {
            "max_body_bytes": body,
            "max_file_bytes": min(body, int(DEFAULT_FILE_MB * 1024 * 1024)),
            "max_files": MAX_FILES,
            "types": list(SUPPORTED),
        }

    # -- knowledge bases ------------------------------------------------------------

    @router.get(
        "/knowledge-bases", tags=["knowledge bases"], response_model=KBList, responses=_ERRORS
    )
    async def list_kbs(key: ApiKey | None = who) -> dict[str, Any]:
        """Every knowledge base the key may use, with its size; and the upload limits."""

        def read() -> list[dict[str, Any]]:
            from ..rag import KnowledgeBase, kb_names

            out = []
            for name in kb_names():
                if key is not None and not key.allows_kb(name):
                    continue
                try:
                    base = KnowledgeBase.open(name, gateway=gateway)
                except UserError as exc:  # a file that is not a knowledge base: say so
                    out.append(
                        {
                            "name": name,
                            "engine": None,
                            "embedder": None,
                            "documents": 0,
                            "chunks": 0,
                            "tokens": 0,
                            "chunk_tokens": None,
                            "chunk_overlap": None,
                            "size_bytes": None,
                            "error": str(exc),
                        }
                    )
                    continue
                try:
                    out.append(_info(base))
                finally:
                    base.close()
            return out

        data = await asyncio.to_thread(read)
        return {"object": "list", "data": data, "upload": limits()}

    @router.post(
        "/knowledge-bases",
        tags=["knowledge bases"],
        status_code=201,
        response_model=KBInfo,
        responses={**_ERRORS, **exists},
    )
    async def create_kb(body: KBCreate, key: ApiKey | None = who) -> dict[str, Any]:
        """Create an empty knowledge base (as `outcrop kb create`)."""
        from ..rag import KnowledgeBase

        allowed(key, body.name)
        await server.admit_call(key, body.embedder)

        def make() -> dict[str, Any]:
            from ..rag import kb_names

            if body.name in kb_names():
                raise error(
                    409,
                    f"Knowledge base {body.name!r} already exists; add files to it, or pick "
                    "another name.",
                    code="kb_exists",
                    param="name",
                )
            try:
                base = KnowledgeBase.create(
                    body.name,
                    embedder=body.embedder,
                    chunk_tokens=body.chunk_tokens,
                    chunk_overlap=body.chunk_overlap,
                    gateway=gateway,
                )
            except UnknownModelError as exc:
                raise error(
                    400, f"embedder: {exc}", code="model_not_found", param="embedder"
                ) from None
            try:
                return _info(base)
            finally:
                base.close()

        return await asyncio.to_thread(make)

    @router.get(
        "/knowledge-bases/{name}",
        tags=["knowledge bases"],
        response_model=KBDetail,
        responses=_ERRORS,
    )
    async def kb_detail(
        name: str, limit: int = Query(1000, ge=1, le=100_000), key: ApiKey | None = who
    ) -> dict[str, Any]:
        """A knowledge base's settings, size and documents (the first ``limit``)."""
        base = await asyncio.to_thread(open_kb, name, key)

        def read() -> dict[str, Any]:
            docs = base.store.documents()[:limit]
            return {
                **_info(base),
                "documents_list": [
                    {
                        "source": d.source,
                        "title": d.title,
                        "type": d.metadata.get("type"),
                        "chunks": d.chunks,
                        "pages": d.metadata.get("pages"),
                        "uploaded": d.origin == UPLOAD_ORIGIN,
                        "added_at": d.added_at,
                    }
                    for d in docs
                ],
            }

        try:
            return await asyncio.to_thread(read)
        finally:
            base.close()

    @router.post(
        "/knowledge-bases/{name}/documents",
        tags=["knowledge bases"],
        response_model=UploadReport,
        responses=upload_errors,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "minItems": 1,
                                    "maxItems": MAX_FILES,
                                    "description": "One or more files: "
                                    + ", ".join(limits()["types"]),
                                }
                            },
                            "required": ["files"],
                            "additionalProperties": False,
                        }
                    }
                },
            }
        },
    )
    async def upload(
        name: str,
        request: Request,
        max_mb: float = Query(
            DEFAULT_FILE_MB,
            gt=0,
            le=10_000,
            allow_inf_nan=False,
            description="Skip files larger than this (MB).",
        ),
        json_field: str = Query(
            "text", min_length=1, max_length=200, description="The JSON/JSONL field of the text."
        ),
        csv_column: Annotated[
            list[str] | None, Query(description="CSV column(s) to index.")
        ] = None,
        key: ApiKey | None = who,
    ) -> dict[str, Any]:
        """Add files to a knowledge base (as `outcrop kb add`), each reported as added,
        updated, unchanged or skipped with the reason. A skipped file changes nothing
        stored; a file sent again replaces its earlier version."""
        from ..rag import LoadOptions

        base = await asyncio.to_thread(open_kb, name, key)
        try:
            await server.admit_call(key, base.embedder_id)
            content_type = request.headers.get("content-type", "")
            if not content_type.lower().startswith("multipart/form-data"):
                raise error(
                    415,
                    "Send the files as multipart/form-data, each in a form field named 'files' "
                    f"(got Content-Type {content_type or 'none'!r}).",
                    code="unsupported_media_type",
                )
            try:
                form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
            except StarletteHTTPException as exc:
                raise error(
                    400,
                    f"The upload could not be read as multipart/form-data ({exc.detail}); send "
                    f"at most {MAX_FILES} files, each in a form field named 'files'.",
                    param="files",
                ) from None
            try:
                others = sorted({k for k in form if k != "files"})
                if others:
                    raise error(
                        400,
                        f"Unknown form field {others[0]!r}: send each file in a field named "
                        "'files'.",
                        param=others[0],
                    )
                items = form.getlist("files")
                if not items:
                    raise error(
                        400,
                        "No file in the upload: send one or more files, each in a form field "
                        "named 'files'.",
                        param="files",
                    )
                files: list[tuple[str, UploadFile]] = []
                for item in items:
                    if not isinstance(item, UploadFile):
                        raise error(
                            400,
                            "The form field 'files' holds text, not a file (or a file without "
                            "a name): attach each file with its file name.",
                            param="files",
                        )
                    files.append((item.filename or "", item))
                options = LoadOptions(
                    max_bytes=int(max_mb * 1024 * 1024),
                    json_field=json_field,
                    csv_columns=csv_column or None,
                )
                acting = _acting(key)
                try:
                    return await asyncio.to_thread(_ingest, base, files, options)
                finally:
                    _reset(acting)
            finally:
                await form.close()
        finally:
            base.close()

    @router.delete(
        "/knowledge-bases/{name}/documents/{source:outcrop_text}",
        tags=["knowledge bases"],
        response_model=DocumentDeleted,
        responses=_ERRORS,
    )
    async def delete_document(
        name: str,
        source: str = PathParam(
            description="The document's source, as listed.",
            openapi_examples={"a document": {"value": "returns.md"}},
        ),
        key: ApiKey | None = who,
    ) -> dict[str, Any]:
        """Remove one document from a knowledge base."""
        base = await asyncio.to_thread(open_kb, name, key)

        def remove() -> dict[str, Any]:
            keys = [(d.origin, d.source) for d in base.store.documents() if d.source == source]
            if not keys:
                sources = [d.source for d in base.store.documents()]
                close = difflib.get_close_matches(source, sources, n=2, cutoff=0.5)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise error(
                    404,
                    f"{name} holds no document {source!r}.{hint} See its documents on the "
                    "Knowledge page or with `outcrop kb info`.",
                    code="document_not_found",
                )
            removed = base.store.delete_documents(keys)
            return {"deleted": source, "documents": removed, "knowledge_base": _info(base)}

        try:
            return await asyncio.to_thread(remove)
        finally:
            base.close()

    # -- the catalog ------------------------------------------------------------------

    @router.get("/catalog/models", tags=["catalog"], response_model=CatalogList, responses=_ERRORS)
    async def catalog_models(
        task: str | None = Query(
            None, min_length=1, max_length=500, description="A use case, or words naming some."
        ),
        modality: str | None = Query(None, description="text, image or embedding."),
        kind: str | None = Query(None, description="chat, embedding or image."),
        min_context: int | None = Query(None, ge=1, description="At least this many tokens."),
        max_price: float | None = Query(
            None, ge=0, allow_inf_nan=False, description="USD per million input tokens."
        ),
        licence: str | None = Query(None, max_length=200, description="Part of the licence."),
        local: bool | None = Query(None, description="Runs on a laptop (true) or hosted (false)."),
        key: ApiKey | None = who,
    ) -> dict[str, Any]:
        """The foundation-model catalog, filtered as `outcrop models list --catalog`."""
        from ..catalog.models import as_of, filter_models

        found = filter_models(
            task=task,
            modality=modality,
            min_context=min_context,
            max_input_price=max_price,
            licence=licence,
            runs_locally=local,
            kind=kind,
        )
        return {
            "object": "list",
            "as_of": as_of().isoformat(),
            "data": [_entry(m) for m in found],
            "use_cases": list(USE_CASES),
            "modalities": list(MODALITIES),
            "kinds": list(KINDS),
        }

    @router.get(
        "/catalog/models/{model_id:outcrop_text}",
        tags=["catalog"],
        response_model=CatalogEntry,
        responses=_ERRORS,
    )
    async def catalog_model(
        model_id: str = PathParam(
            description="An id or name, e.g. llama-3.1-8b.",
            openapi_examples={"a model": {"value": "local:smollm2-135m"}},
        ),
        key: ApiKey | None = who,
    ) -> dict[str, Any]:
        """One catalog model: size, architecture, licence, prices, use cases, sources."""
        from ..catalog.models import find

        return _entry(find(model_id))

    @router.get(
        "/catalog/recommend",
        tags=["catalog"],
        response_model=RecommendationList,
        responses=_ERRORS,
    )
    async def catalog_recommend(
        task: str = Query(
            min_length=1,
            max_length=1000,
            description="The task in words.",
            openapi_examples={"a task": {"value": "classify support tickets offline"}},
        ),
        budget: float | None = Query(
            None, ge=0, allow_inf_nan=False, description="USD per million input tokens, at most."
        ),
        local: bool | None = Query(None, description="Only models run here (true)."),
        min_context: int | None = Query(None, ge=1),
        top: int = Query(5, ge=1, le=50),
        key: ApiKey | None = who,
    ) -> dict[str, Any]:
        """Catalog models ranked for a task, with the reasons (as `outcrop models recommend`)."""
        from ..catalog.models import read_task, recommend

        picks = recommend(
            task,
            budget_per_million=budget,
            runs_locally=local,
            min_context=min_context,
            top=top,
        )
        return {
            "object": "list",
            "read_as": read_task(task).describe(),
            "data": [
                {
                    "model": p.model.id,
                    "name": p.model.name,
                    "score": p.score,
                    "reasons": list(p.reasons),
                    "entry": _entry(p.model),
                }
                for p in picks
            ],
        }

    @router.get("/catalog/size", tags=["catalog"], response_model=SizeChoices, responses=_ERRORS)
    async def size_choices(key: ApiKey | None = who) -> dict[str, Any]:
        """The precisions, KV cache types and GPUs the sizing calculator knows."""
        from ..catalog import sizing

        return {
            "precisions": list(sizing._PRECISION_BITS),
            "kv_cache_types": list(sizing._KV_BITS),
            "gpus": [g.name for g in sizing.GPUS],
        }

    @router.post("/catalog/size", tags=["catalog"], response_model=SizeOut, responses=_ERRORS)
    async def size_model(body: SizeRequest, key: ApiKey | None = who) -> dict[str, Any]:
        """Memory to run and to fine-tune a model, and whether it fits (as `outcrop models
        size`): weights, KV cache, working memory, training, a fit table, the rule of thumb."""
        from ..catalog.models import find
        from ..catalog.sizing import parse_params, size

        if (body.model is None) == (body.params is None):
            raise error(
                400,
                'Give a model or params (one of them), e.g. {"model": "llama-3.1-8b"} or '
                '{"params": "7B"}.',
                param="model" if body.model is None else "params",
            )
        target: Any
        if body.params is not None:
            count = (
                parse_params(body.params) if isinstance(body.params, str) else float(body.params)
            )
            if not _MIN_PARAMS <= count <= _MAX_PARAMS:
                raise error(
                    400,
                    f"params: {count:g} is not a model size; give between 100K and 100T "
                    "parameters, e.g. 7B",
                    param="params",
                )
            target = count
        else:
            target = find(body.model or "").sizing_architecture()
        report = await asyncio.to_thread(
            size,
            target,
            precision=body.precision,
            context=body.context,
            batch=body.batch,
            kv_cache_type=body.kv_cache_type,
            train_seq=body.train_seq,
            lora_rank=body.lora_rank,
        )
        return report.to_dict()

    return router


def _acting(key: ApiKey | None) -> Any:
    """Count the model calls a request makes on its own (embeddings) against its key."""
    from ..gateway import current_api_key

    return current_api_key.set(key.id if key else None)


def _reset(token: Any) -> None:
    from ..gateway import current_api_key

    current_api_key.reset(token)
