"""API keys for ``outcrop serve``: created once and shown once, stored only as a hash.

A key carries scopes (which models and knowledge bases it may use, as glob
patterns) and limits (requests and tokens per minute; tokens and US dollars per
day and per month). Keys are 192 random bits, so a plain SHA-256 of the key is
a safe thing to store and look up: nothing about the key can be recovered from it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidRequestError, UserError
from ..observe.store import Store

__all__ = [
    "ApiKey",
    "KeyCache",
    "KeyLimits",
    "authenticate",
    "create_key",
    "hash_key",
    "list_api_keys",
]

PREFIX = "oc-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value <= 0:
                raise InvalidRequestError(f"{name} must be above 0 (got {value})", field=name)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str  # the first characters, to recognise a key without storing it
    models: list[str] = field(default_factory=lambda: ["*"])
    knowledge_bases: list[str] = field(default_factory=lambda: ["*"])
    limits: KeyLimits = field(default_factory=KeyLimits)
    created_at: float = 0.0

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def allows_kb(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.knowledge_bases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "models": self.models,
            "knowledge_bases": self.knowledge_bases,
            "limits": {k: v for k, v in asdict(self.limits).items() if v is not None},
            "created_at": self.created_at,
        }


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _from_row(row: dict[str, Any]) -> ApiKey:
    scopes = json.loads(row["scopes"])
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        models=list(scopes.get("models", ["*"])),
        knowledge_bases=list(scopes.get("knowledge_bases", ["*"])),
        limits=KeyLimits(**json.loads(row["limits"])),
        created_at=row["created_at"],
    )


def create_key(
    store: Store,
    name: str,
    *,
    models: list[str] | None = None,
    knowledge_bases: list[str] | None = None,
    limits: KeyLimits | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it and its secret (shown once: only its hash is stored)."""
    if not _NAME.match(name):
        raise InvalidRequestError(
            f"Key name {name!r} is not valid: letters, digits, '_', '-', '.' (at most 64)",
            field="name",
        )
    if any(k["name"] == name for k in store.api_keys(include_revoked=True)):
        raise UserError(f"A key named {name!r} exists already; pick another name.")
    secret = PREFIX + secrets.token_urlsafe(24)
    key = ApiKey(
        id=secrets.token_hex(8),
        name=name,
        prefix=secret[:7],
        models=list(models or ["*"]),
        knowledge_bases=list(knowledge_bases or ["*"]),
        limits=limits or KeyLimits(),
        created_at=time.time(),
    )
    store.add_api_key(
        key_id=key.id,
        name=name,
        key_hash=hash_key(secret),
        prefix=key.prefix,
        scopes=json.dumps({"models": key.models, "knowledge_bases": key.knowledge_bases}),
        limits=json.dumps({k: v for k, v in asdict(key.limits).items() if v is not None}),
        created_at=key.created_at,
    )
    return key, secret


def list_api_keys(store: Store) -> list[ApiKey]:
    return [_from_row(r) for r in store.api_keys()]


def authenticate(store: Store, secret: str) -> ApiKey | None:
    """The live key this secret belongs to, or None."""
    row = store.api_key_by_hash(hash_key(secret))
    return None if row is None else _from_row(row)


class KeyCache:
    """The server's view of its keys without a database read per request.

    Whether any key exists, and which key a secret belongs to (or that it belongs to none),
    are remembered for ``ttl`` seconds. A key added or revoked through this process's store
    takes effect at once; one added or revoked by another process (``outcrop keys`` on the
    command line, another replica) within ``ttl`` seconds.
    """

    def __init__(self, store: Store, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = -1
        self._expires = 0.0
        self._any = False
        self._known: dict[str, ApiKey | None] = {}

    def _stale(self) -> bool:
        return self._generation != self.store.keys_generation or self._clock() >= self._expires

    def refresh(self) -> None:
        """Read whether keys exist again (a database read: call it off the event loop)."""
        generation = self.store.keys_generation
        exists = bool(self.store.api_keys())  # outside the lock: it may wait on the database
        with self._lock:
            self._generation = generation
            self._expires = self._clock() + self.ttl
            self._any = exists
            self._known.clear()

    def stale(self) -> bool:
        """Whether the next question needs the database (then ask it off the event loop)."""
        with self._lock:
            return self._stale()

    def required(self) -> bool:
        """Whether any live key exists (then every endpoint but /health needs one)."""
        if self.stale():
            self.refresh()
        with self._lock:
            return self._any

    def cached(self, secret: str) -> bool:
        """Whether :meth:`lookup` can answer for ``secret`` without the database."""
        with self._lock:
            return not self._stale() and hash_key(secret) in self._known

    def lookup(self, secret: str) -> ApiKey | None:
        digest = hash_key(secret)
        if self.stale():
            self.refresh()
        with self._lock:
            if digest in self._known:
                return self._known[digest]
            generation = self._generation
        key = authenticate(self.store, secret)
        with self._lock:
            if self._generation == generation:
                if len(self._known) >= 4096:  # unknown secrets must not grow it without end
                    self._known.clear()
                self._known[digest] = key
        return key
