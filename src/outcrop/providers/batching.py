"""Continuous batching for the local model: several requests share one llama.cpp context.

A :class:`BatchEngine` owns a second llama.cpp context on the weights a ``Llama`` already
loaded (no second copy of the model), with one sequence per slot. One scheduler thread
runs the steps; each step it

1. admits waiting requests into free slots, first come first served (into the slot
   whose cache already holds the longest beginning of the prompt, such as the chat
   template's system prompt, which is then not read again);
2. decodes one token for every sequence that is generating, all in ONE batch (one
   ``llama_decode`` call), and samples each sequence's next token with its own sampler
   chain (the same chain, seed and defaults as ``Llama.generate`` on the exclusive
   path), handing it to the request's :class:`Handle`;
3. reads up to ``prefill_chunk`` prompt tokens of the sequences that are new, first
   come first served (a long prompt is read over several steps, so it never stalls the
   others for long), and samples the first token of each prompt read to its end.

A request joins between two steps and leaves as soon as it stops (end-of-generation,
``max_tokens``, or ``Handle.cancel()``), which frees its slot for the next one.

::

    engine = BatchEngine(llama, slots=8)
    handle = engine.submit(tokens, max_tokens=32, temperature=0, top_p=None, seed=None)
    for token in handle:                   # token ids; end-of-generation is not one of them
        ...
    handle.prompt_tokens, handle.generated, handle.finish_reason
    engine.close()

Errors in the scheduler thread reach every waiting handle as a :class:`ProviderError`;
no reader is left waiting. Sequences do not see each other: each slot has its own
stream of the key-value cache and each sequence its own sampler, so an answer is the
same tokens as on the exclusive path, alone or beside others (checked by the tests and
the benchmark at temperature 0; llama.cpp's CPU numbers can depend on how a prompt is
cut into micro-batches, which is why prompts are read in pieces of two tokens or more).
"""

from __future__ import annotations

import atexit
import collections
import itertools
import os
import queue
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, cast

from ..errors import InvalidRequestError, ProviderError
from .local import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, MIN_P, TOP_K

__all__ = ["BatchEngine", "EngineFinish", "Handle"]

EngineFinish = Literal["stop", "length", "cancelled", "error"]

_POLL_S = 1.0  # how often a waiting reader checks that the engine thread is still alive
_JOIN_S = 30.0  # the longest close() waits for the scheduler's current step

_ENGINES: weakref.WeakSet[BatchEngine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    """Stop every engine while threads still run: at interpreter exit, before the weights
    are freed (a scheduler thread caught in finalisation could never be joined)."""
    for engine in list(_ENGINES):
        engine.close()


def _close_if_alive(ref: weakref.ref[BatchEngine]) -> None:
    engine = ref()
    if engine is not None:
        engine.close()


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the common beginning of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _End:
    """The last item of a handle's queue: the sequence stopped normally."""


_END = _End()


class Handle:
    """One request in a :class:`BatchEngine`: an iterator of the generated token ids.

    ``prompt_tokens`` is the prompt's length (``cached_tokens`` of them were already in
    the slot's cache and not read again); ``generated`` the tokens sampled so far
    (end-of-generation not counted, as llama-cpp-python counts), including those made
    before a cancel; ``delivered`` the tokens this iterator has handed out;
    ``finish_reason`` is None until the sequence stops, then "stop", "length",
    "cancelled" or "error" (the iterator then raises the error). ``cancel()`` is safe
    from any thread: a waiting request leaves the queue at once, a running one frees its
    slot at the next step.
    """

    def __init__(
        self,
        engine: BatchEngine,
        prompt: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        seed: int,
        stop_token_ids: frozenset[int],
    ):
        self.prompt_tokens = len(prompt)
        self.cached_tokens = 0  # prompt tokens found in the slot's cache, not read again
        self.max_tokens = max_tokens
        self.generated = 0
        self.delivered = 0
        self.finish_reason: EngineFinish | None = None
        self._engine = engine
        self._prompt = prompt
        self._sampling = (temperature, top_p, top_k, min_p, seed)
        self._stop_ids = stop_token_ids
        self._queue: queue.SimpleQueue[int | _End | BaseException] = queue.SimpleQueue()
        self._ended = False
        self._cancel = threading.Event()
        # Owned by the engine thread while the request holds a slot:
        self._slot = -1
        self._admitted = 0  # admission order, for first-come prompt reading
        self._fed = 0  # prompt tokens already decoded
        self._next: int | None = None  # the sampled token to decode next
        self._sampler: Any = None

    @property
    def done(self) -> bool:
        """Whether the sequence has stopped (its remaining tokens may still be unread)."""
        return self.finish_reason is not None

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self._ended:
            raise StopIteration
        item = self._get()
        if isinstance(item, int):
            self.delivered += 1
            return item
        self._ended = True
        if isinstance(item, BaseException):
            raise item
        raise StopIteration

    def _get(self) -> int | _End | BaseException:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._engine._alive():
                    try:  # the engine may have put the end just before it stopped
                        return self._queue.get_nowait()
                    except queue.Empty:
                        return ProviderError(
                            "The batch engine stopped without finishing this request.",
                            retryable=True,
                        )

    def cancel(self) -> None:
        """Stop generating; the tokens made so far stay counted in ``generated``."""
        self._engine._cancel(self)

    def close(self) -> None:
        """The same as :meth:`cancel` (so a handle closes like a generator)."""
        self.cancel()


class BatchEngine:
    """Continuous batching over one llama.cpp context that shares ``llama``'s weights.

    ``slots`` sequences decode together; more requests wait in FIFO order. Each sequence
    holds up to ``n_ctx_seq`` tokens (default: ``llama``'s context), so the context holds
    ``slots × n_ctx_seq`` and no sequence can crowd out another. ``prefill_chunk`` bounds
    the prompt tokens read per step. The thread count and other context settings are
    ``llama``'s unless given. ``kv_unified=True`` shares one cache stream among the
    sequences (see the note in the constructor); the default gives each its own.
    ``active``, ``waiting`` and ``submitted`` count requests, for metrics.
    """

    def __init__(
        self,
        llama: Any,
        *,
        slots: int = 8,
        n_ctx_seq: int | None = None,
        prefill_chunk: int = 64,
        n_threads: int | None = None,
        kv_unified: bool = False,
    ):
        import llama_cpp

        if slots < 1:
            raise InvalidRequestError(f"slots must be at least 1, not {slots}", field="slots")
        if prefill_chunk < 2:
            raise InvalidRequestError(
                f"prefill_chunk must be at least 2, not {prefill_chunk}", field="prefill_chunk"
            )
        self._llama_cpp = llama_cpp
        self._llama = llama  # keeps the weights alive as long as the engine
        self._model = llama._model
        self.slots = slots
        self.n_ctx_seq = int(n_ctx_seq or llama.n_ctx())
        self.prefill_chunk = prefill_chunk
        self._n_batch = max(slots, prefill_chunk)  # the most tokens one decode call takes
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        params.n_ctx = self.n_ctx_seq * slots
        params.n_seq_max = slots
        # By default each sequence has its own stream of the key-value cache: attention reads
        # only that sequence's cells, and its numbers are those of a solo run. (One shared
        # stream makes every token attend over all the cells in use, masked: slower, and
        # greedy answers drift from solo ones within a few dozen tokens.)
        params.kv_unified = kv_unified
        params.n_batch = self._n_batch
        params.n_ubatch = min(self._n_batch, 512)
        if n_threads is not None:
            params.n_threads = n_threads
            params.n_threads_batch = n_threads
        ctx = llama_cpp.llama_init_from_model(self._model.model, params)
        if ctx is None:
            raise ProviderError(
                f"llama.cpp could not make a context for {slots} sequences of {self.n_ctx_seq} "
                "tokens; lower the slots or the context size.",
                retryable=False,
            )
        self._ctx = ctx
        self.n_ctx_seq = min(self.n_ctx_seq, int(llama_cpp.llama_n_ctx_seq(ctx)))
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._vocab = self._model.vocab
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._cond = threading.Condition()
        self._waiting: collections.deque[Handle] = collections.deque()
        self._active: list[Handle | None] = [None] * slots
        # The tokens whose keys and values each slot's cache holds, from positions 0 on: a
        # finished sequence leaves them, and the next prompt in that slot reuses the common
        # beginning (the chat template's system prompt, earlier turns) instead of reading it.
        self._cached: list[list[int]] = [[] for _ in range(slots)]
        self._closing = False
        self._error: BaseException | None = None  # why the scheduler stopped, if it failed
        self._freed = False
        self._admissions = itertools.count()
        self.submitted = 0  # requests accepted since the engine was made
        self._thread = threading.Thread(
            target=self._run, name=f"outcrop-batch-engine-{id(self):x}", daemon=True
        )
        # The context must go before the weights it uses, whoever frees them first.
        stack = getattr(self._model, "_exit_stack", None)
        if stack is not None:
            stack.callback(_close_if_alive, weakref.ref(self))
        _ENGINES.add(self)
        self._thread.start()

    # -- the public surface ---------------------------------------------------

    def submit(
        self,
        prompt_tokens: Sequence[int],
        *,
        max_tokens: int,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop_token_ids: Iterable[int] = (),
        top_k: int = TOP_K,
        min_p: float = MIN_P,
    ) -> Handle:
        """Queue a request; iterate the returned handle for its tokens.

        Sampling is ``Llama.generate``'s: temperature 0 is greedy; otherwise top-k, top-p,
        min-p, temperature, then a draw seeded with ``seed`` (random when None).
        Generation stops at an end-of-generation token, at one of ``stop_token_ids``
        (neither is yielded or counted), or after ``max_tokens`` tokens.
        """
        prompt = [int(t) for t in prompt_tokens]
        if not prompt:
            raise InvalidRequestError("The prompt has no tokens.", field="messages")
        if max_tokens < 1:
            raise InvalidRequestError(
                f"max_tokens must be at least 1, not {max_tokens}", field="max_tokens"
            )
        if len(prompt) + max_tokens > self.n_ctx_seq:
            raise InvalidRequestError(
                f"The prompt ({len(prompt)} tokens) and max_tokens ({max_tokens}) do not fit "
                f"in the {self.n_ctx_seq} tokens a sequence holds; shorten the messages or "
                "lower max_tokens.",
                field="max_tokens",
            )
        handle = Handle(
            self,
            prompt,
            max_tokens=max_tokens,
            temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
            top_p=DEFAULT_TOP_P if top_p is None else top_p,
            top_k=top_k,
            min_p=min_p,
            seed=int.from_bytes(os.urandom(4), "little") if seed is None else seed,
            stop_token_ids=frozenset(stop_token_ids),
        )
        with self._cond:
            self._check_open()
            self.submitted += 1
            self._waiting.append(handle)
            self._cond.notify_all()
        return handle

    @property
    def active(self) -> int:
        """Requests holding a slot now."""
        return sum(h is not None for h in self._active)

    @property
    def waiting(self) -> int:
        """Requests waiting for a free slot."""
        return len(self._waiting)

    @property
    def closed(self) -> bool:
        """Whether the engine takes no more requests (closed, or stopped by an error)."""
        return self._closing or self._error is not None or not self._thread.is_alive()

    def close(self) -> None:
        """Stop the scheduler and free the context. Unfinished requests end with a
        ProviderError. Safe to call more than once, from any thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(_JOIN_S)
        with self._cond:
            if self._freed or self._thread.is_alive():
                return
            self._freed = True
        self._llama_cpp.llama_batch_free(self._batch)
        self._llama_cpp.llama_free(self._ctx)

    def __enter__(self) -> BatchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- called from readers' threads -----------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise ProviderError(
                f"The batch engine stopped after an error ({self._error!r}); make a new one.",
                retryable=True,
            ) from self._error
        if self._closing or not self._thread.is_alive():
            raise ProviderError("The batch engine is closed.", retryable=True)

    def _alive(self) -> bool:
        return self._thread.is_alive()

    def _cancel(self, handle: Handle) -> None:
        with self._cond:
            if handle.finish_reason is not None:
                return
            try:
                self._waiting.remove(handle)
            except ValueError:
                handle._cancel.set()  # running: the scheduler frees the slot next step
                self._cond.notify_all()
                return
        handle.finish_reason = "cancelled"
        handle._queue.put(_END)

    # -- the scheduler thread -------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # a bug or a broken context: tell every reader
            self._error = exc
            self._stop_all(f"The batch engine failed: {exc!r}", exc)
        else:
            self._stop_all("The batch engine was closed before this request finished.", None)

    def _stop_all(self, message: str, cause: BaseException | None) -> None:
        with self._cond:
            self._closing = True
            pending = [*self._waiting, *(h for h in self._active if h is not None)]
            self._waiting.clear()
        for handle in pending:
            error = ProviderError(message, retryable=True)
            error.__cause__ = cause
            if handle._slot >= 0:
                self._release(handle, error)
            else:
                handle.finish_reason = "error"
                handle._queue.put(error)

    def _step(self) -> bool:
        """Admit, decode, sample. False once the engine is closing."""
        with self._cond:
            while not self._closing and not self._waiting and self.active == 0:
                self._cond.wait()
            if self._closing:
                return False
            admitted = []
            free = [slot for slot, holder in enumerate(self._active) if holder is None]
            while free and self._waiting:
                handle = self._waiting.popleft()
                # The free slot whose cache shares the longest beginning with the prompt;
                # on a tie the lowest, which keeps busy slots together.
                reuse, slot = max((_common(self._cached[s], handle._prompt), -s) for s in free)
                free.remove(-slot)
                handle._slot = -slot
                handle._admitted = next(self._admissions)
                self._active[-slot] = handle
                admitted.append((handle, reuse))
        for handle, reuse in admitted:
            self._reuse(handle, reuse)
            handle._sampler = self._sampler(*handle._sampling)
        for handle in self._running():
            if handle._cancel.is_set():
                self._release(handle, "cancelled")
        self._generate()
        self._prefill()
        return True

    def _reuse(self, handle: Handle, reuse: int) -> None:
        """Keep the first ``reuse`` cached tokens of the handle's slot, drop the rest."""
        slot = handle._slot
        # At least the prompt's last token is read again: its logits give the first token.
        reuse = min(reuse, handle.prompt_tokens - 1)
        rm = self._llama_cpp.llama_memory_seq_rm
        if reuse == 0 or not rm(self._memory, slot, reuse, -1):
            rm(self._memory, slot, -1, -1)
            reuse = 0
        del self._cached[slot][reuse:]
        handle._fed = handle.cached_tokens = reuse

    def _generate(self) -> None:
        """One token for every generating sequence, in one decode call (in slot order:
        llama.cpp decodes each run of consecutive slots as one micro-batch)."""
        rows = [h for h in self._running() if h._next is not None]
        if not rows:
            return
        for i, handle in enumerate(rows):
            self._put(i, cast(int, handle._next), self._position(handle), handle._slot, True)
        if self._decode(len(rows), rows):
            for i, handle in enumerate(rows):
                self._cached[handle._slot].append(cast(int, handle._next))
                self._sample(handle, i)

    def _prefill(self) -> None:
        """Read up to ``prefill_chunk`` prompt tokens, first come first served, one decode
        call per sequence; a sequence whose prompt is read samples its first token.

        Each prompt is read in pieces of at least two tokens, unless its last token is
        left alone: llama.cpp's numbers for a prompt are then those of reading it whole,
        and the answer is the exclusive path's (two single-token pieces at the end of a
        prompt would change its last logits slightly).
        """
        budget = self.prefill_chunk
        waiting = sorted((h for h in self._running() if h._next is None), key=lambda h: h._admitted)
        for handle in waiting:
            remaining = handle.prompt_tokens - handle._fed
            take = min(budget, remaining)
            if take < 2 and take < remaining:
                break
            start = handle._fed
            end = start + take
            for i, pos in enumerate(range(start, end)):
                self._put(i, handle._prompt[pos], pos, handle._slot, pos == end - 1)
            if not self._decode(take, [handle]):
                continue
            self._cached[handle._slot].extend(handle._prompt[start:end])
            handle._fed = end
            budget -= take
            if end == handle.prompt_tokens:
                self._sample(handle, take - 1)
            if budget < 2:
                break

    def _decode(self, n: int, handles: list[Handle]) -> bool:
        """Decode the ``n`` tokens put in the batch; on failure, end ``handles`` with the
        error (the engine goes on with the others)."""
        self._batch.n_tokens = n
        rc = self._llama_cpp.llama_decode(self._ctx, self._batch)
        if rc == 0:
            return True
        what = {1: "found no room in the key-value cache", 2: "was aborted"}.get(rc, "failed")
        for handle in handles:
            self._release(
                handle, ProviderError(f"llama.cpp's decode {what} (code {rc}).", retryable=True)
            )
        return False

    def _sample(self, handle: Handle, index: int) -> None:
        """Sample the handle's next token from row ``index`` of the last decode."""
        llama_cpp = self._llama_cpp
        token = int(llama_cpp.llama_sampler_sample(handle._sampler, self._ctx, index))
        if llama_cpp.llama_vocab_is_eog(self._vocab, token) or token in handle._stop_ids:
            self._release(handle, "stop")
            return
        handle.generated += 1
        handle._queue.put(token)
        if handle.generated >= handle.max_tokens:
            self._release(handle, "length")
        else:
            handle._next = token

    def _running(self) -> list[Handle]:
        return [h for h in self._active if h is not None]

    @staticmethod
    def _position(handle: Handle) -> int:
        # The token sampled last sits after the prompt and the tokens decoded before it.
        return handle.prompt_tokens + handle.generated - 1

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _release(self, handle: Handle, reason: EngineFinish | ProviderError) -> None:
        """Free the handle's slot and sampler; end its stream normally, or with an error.
        The slot's cache stays for the next prompt, unless an error leaves it in doubt."""
        llama_cpp = self._llama_cpp
        if isinstance(reason, ProviderError):
            llama_cpp.llama_memory_seq_rm(self._memory, handle._slot, -1, -1)
            self._cached[handle._slot].clear()
        if handle._sampler is not None:
            llama_cpp.llama_sampler_free(handle._sampler)
            handle._sampler = None
        with self._cond:
            self._active[handle._slot] = None
            handle._slot = -1
            handle.finish_reason = "error" if isinstance(reason, ProviderError) else reason
            handle._next = None
        handle._queue.put(reason if isinstance(reason, ProviderError) else _END)

    def _sampler(
        self, temperature: float, top_p: float, top_k: int, min_p: float, seed: int
    ) -> Any:
        """The chain ``Llama.generate`` builds for the same options (its repetition penalty
        and typical-p are off at outcrop's settings, so they are left out)."""
        llama_cpp = self._llama_cpp
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if temperature == 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        for sampler in (
            llama_cpp.llama_sampler_init_top_k(top_k),
            llama_cpp.llama_sampler_init_top_p(top_p, 1),
            llama_cpp.llama_sampler_init_min_p(min_p, 1),
            llama_cpp.llama_sampler_init_temp(temperature),
            llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF),
        ):
            llama_cpp.llama_sampler_chain_add(chain, sampler)
        return chain
