"""Per-key rate limits and budgets, and the fair queue in front of each local model.

Rate limits are sliding 60-second windows kept in this process (requests, and
the tokens of finished calls). Budgets are read from the trace ledger — every
call a key makes is a trace row carrying the key's id — so a budget counts
streamed calls exactly as plain ones, cancelled streams with their partial usage
included. Before a call starts, a token budget also caps its ``max_tokens`` to
what is left, so a call cannot overrun the budget by more than its prompt.

Where these are kept is a backend behind :class:`Limits`: :class:`Limiter`, in this
process (the default), or :class:`~outcrop.serve.redis_limits.RedisLimits`, in Redis,
so that several ``outcrop serve`` replicas enforce one limit. :func:`limits_for` picks
one from ``OUTCROP_REDIS_URL`` (or ``[storage] redis_url`` in outcrop.toml).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from ..observe.store import Store
from .keys import ApiKey

__all__ = [
    "Call",
    "Denied",
    "FairQueue",
    "Grant",
    "Limiter",
    "Limits",
    "QueueFull",
    "QueueTimeout",
    "limits_for",
]


@dataclass
class Denied(Exception):
    """A request over a limit: the status to answer, why, and when to try again."""

    status: int
    message: str
    code: str
    retry_after: float | None = None

    @property
    def type(self) -> str:
        """The error type of the OpenAI error body."""
        if self.status >= 500:
            return "server_error"
        return "insufficient_quota" if self.code == "insufficient_quota" else "rate_limit_error"


@dataclass(frozen=True)
class Call:
    """What a chat call asks of a key's budgets, for a backend that holds them while it runs."""

    max_tokens: int | None = None  # what it asked to write (None: it did not say)
    prompt_tokens: int = 0  # about how long its prompt is
    usd_per_input_token: float | None = None  # its model's prices (None: unknown)
    usd_per_output_token: float | None = None


@dataclass
class Grant:
    """What :meth:`Limits.admit` allowed one call."""

    key: ApiKey | None = None
    cap: int | None = None  # the most tokens the call may use (None: no token budget)
    hold: str | None = None  # a reservation against the budgets, settled after the call
    trace_id: str | None = None  # the call's trace row, once it has one (see Limits.bind)


def _day_start(now: float) -> float:
    t = time.gmtime(now)
    return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)))


def _month_start(now: float) -> float:
    t = time.gmtime(now)
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))


class Limits(ABC):
    """Where a server keeps rate limits and budgets: checked before each call, settled after.

    A call is admitted (:meth:`admit`), the trace it will be recorded under is bound to
    what it was granted (:meth:`bind`), and when it is over :meth:`settle` learns its
    tokens. A backend may hold part of a budget for a call while it runs; the call's
    trace row, or :meth:`settle` for a call that never started, gives it back.
    """

    #: True for a backend that replicas share: a check is a network round trip (the server
    #: runs it off the event loop), and a chat call holds its share of the budgets while it
    #: runs (the server describes it with a :class:`Call`).
    shared: bool = False

    @abstractmethod
    def admit(self, key: ApiKey, call: Call | None = None) -> Grant:
        """Count a request against ``key``; raises :class:`Denied` over a limit.

        With ``call`` (chat completions), a shared backend holds the call's prompt and
        ``max_tokens`` — capped to what is left — of the key's budgets until it is over."""

    def bind(self, grant: Grant, trace_id: str) -> None:
        """The call's trace row will be recorded under ``trace_id``."""
        grant.trace_id = trace_id

    @abstractmethod
    def settle(self, grant: Grant, tokens: int) -> None:
        """The call is over and used ``tokens`` (0 for a call that failed or never ran)."""

    def close(self) -> None:
        """Release what the backend holds (connections, store listeners)."""
        return None


def limits_for(store: Store, settings: Settings | None = None) -> Limits:
    """The backend ``OUTCROP_REDIS_URL`` or ``[storage] redis_url`` asks for: Redis when a
    URL is set (checked now, so a wrong one stops the server at start-up), else in-process.

    ``OUTCROP_REDIS_PREFIX`` (default ``outcrop:``) starts every Redis key, so that
    several deployments can share one Redis."""
    url = os.environ.get("OUTCROP_REDIS_URL") or _setting(settings, "redis_url")
    if not url:
        return Limiter(store)
    from .redis_limits import RedisLimits

    prefix = os.environ.get("OUTCROP_REDIS_PREFIX") or _setting(settings, "redis_prefix")
    return RedisLimits(url, store, prefix=prefix or "outcrop:")


def _setting(settings: Settings | None, name: str) -> str | None:
    storage = getattr(settings, "storage", None)
    value = getattr(storage, name, None)
    if value is None and isinstance(storage, dict):
        value = storage.get(name)
    return str(value) if value else None


class Limiter(Limits):
    """Checks a key's rate limits and budgets before a call; learns its tokens after.

    Everything is kept in this process; budgets are read from the trace ledger."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    def admit(self, key: ApiKey, call: Call | None = None) -> Grant:
        """Count a request against ``key``; raises :class:`Denied` over a limit.

        The grant's ``cap`` is the most tokens the call may use (``None``: no token
        budget). Nothing is held: concurrent calls each see what finished calls left."""
        limits = key.limits
        now = self.clock()
        with self._lock:
            window = self._requests.setdefault(key.id, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if limits.requests_per_minute is not None and len(window) >= limits.requests_per_minute:
                raise Denied(
                    429,
                    f"Rate limit reached: {limits.requests_per_minute} requests per minute for "
                    f"key {key.name!r}. Try again shortly.",
                    "rate_limit_exceeded",
                    retry_after=max(0.1, window[0] + 60 - now),
                )
            tokens = self._tokens.setdefault(key.id, deque())
            while tokens and tokens[0][0] <= now - 60:
                tokens.popleft()
            used = sum(n for _, n in tokens)
            if limits.tokens_per_minute is not None and used >= limits.tokens_per_minute:
                raise Denied(
                    429,
                    f"Rate limit reached: {limits.tokens_per_minute} tokens per minute for key "
                    f"{key.name!r}. Try again shortly.",
                    "rate_limit_exceeded",
                    retry_after=max(0.1, tokens[0][0] + 60 - now),
                )
            window.append(now)
        left: list[int] = []
        if limits.tokens_per_minute is not None:
            left.append(limits.tokens_per_minute - used)
        for per, start, token_limit, usd_limit in (
            ("day", _day_start(now), limits.tokens_per_day, limits.usd_per_day),
            ("month", _month_start(now), limits.tokens_per_month, limits.usd_per_month),
        ):
            if token_limit is None and usd_limit is None:
                continue
            spent_tokens, spent_usd, _ = self.store.key_usage(key.id, start)
            if token_limit is not None:
                if spent_tokens >= token_limit:
                    self._undo(key.id, now)
                    raise Denied(
                        429,
                        f"Budget exhausted: key {key.name!r} used {spent_tokens:,} of its "
                        f"{token_limit:,} tokens this {per}.",
                        "insufficient_quota",
                    )
                left.append(token_limit - spent_tokens)
            if usd_limit is not None and spent_usd >= usd_limit:
                self._undo(key.id, now)
                raise Denied(
                    429,
                    f"Budget exhausted: key {key.name!r} spent ${spent_usd:.4f} of its "
                    f"${usd_limit:.2f} this {per}.",
                    "insufficient_quota",
                )
        return Grant(key, min(left) if left else None)

    def settle(self, grant: Grant, tokens: int) -> None:
        if grant.key is not None:
            self.spent(grant.key, tokens)

    def _undo(self, key_id: str, at: float) -> None:
        with self._lock:
            window = self._requests.get(key_id)
            if window and at in window:
                window.remove(at)

    def spent(self, key: ApiKey, tokens: int) -> None:
        """Record a finished call's tokens for the per-minute token limit."""
        if tokens <= 0:
            return
        with self._lock:
            self._tokens.setdefault(key.id, deque()).append((self.clock(), tokens))


class QueueFull(Exception):
    def __init__(self, waiting: int, retry_after: float):
        self.waiting = waiting
        self.retry_after = retry_after


class QueueTimeout(Exception):
    def __init__(self, waited: float, retry_after: float):
        self.waited = waited
        self.retry_after = retry_after


class FairQueue:
    """First come, first served access to a model that serves ``slots`` calls at a time.

    At most ``max_waiting`` requests wait; the next is refused at once (429). A
    request that waits longer than ``timeout`` seconds gives up (503). Both carry
    a Retry-After from the recent service time.
    """

    def __init__(self, slots: int = 1, max_waiting: int = 32, timeout: float = 60.0):
        self.slots = slots
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._recent: deque[float] = deque(maxlen=20)  # seconds per call

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _retry_after(self) -> float:
        per_call = sum(self._recent) / len(self._recent) if self._recent else 1.0
        return max(1.0, round(per_call * (self.waiting + 1) / self.slots, 1))

    async def acquire(self) -> None:
        if self.active < self.slots and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.max_waiting:
            raise QueueFull(len(self._waiters), self._retry_after())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            if future.done() and not future.cancelled():
                return  # handed a slot just as the wait ran out: keep it
            future.cancel()
            self._discard(future)
            raise QueueTimeout(time.monotonic() - t0, self._retry_after()) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(0.0)  # the slot was ours; pass it on
            else:
                future.cancel()
                self._discard(future)
            raise

    def _discard(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(future)

    def release(self, seconds: float) -> None:
        if seconds > 0:
            self._recent.append(seconds)
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next in line
                return
        self.active -= 1
