"""The server's key cache: no database read per request, changes seen at once or within the TTL."""

from pathlib import Path

from outcrop import Store
from outcrop.serve.keys import KeyCache, create_key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keys_added_or_revoked_here_count_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db")
    cache = KeyCache(store, ttl=3600, clock=Clock())
    assert cache.required() is False
    key, secret = create_key(store, "app")
    assert cache.required() is True  # same store object: no waiting for the TTL
    found = cache.lookup(secret)
    assert found is not None and found.id == key.id
    assert cache.lookup("oc-not-a-key") is None
    store.revoke_api_key("app", 1.0)
    assert cache.lookup(secret) is None
    assert cache.required() is False
    store.close()


def test_changes_made_by_another_process_count_after_the_ttl(tmp_path: Path) -> None:
    server_store = Store(tmp_path / "o.db")
    cli_store = Store(tmp_path / "o.db")  # `outcrop keys` in another process
    clock = Clock()
    cache = KeyCache(server_store, ttl=1.0, clock=clock)
    _, secret = create_key(cli_store, "app")
    assert cache.required() is True  # first look reads the database
    assert cache.lookup(secret) is not None
    cli_store.revoke_api_key("app", 1.0)
    clock.now = 0.5
    assert cache.lookup(secret) is not None  # remembered within the TTL
    clock.now = 1.0
    assert cache.lookup(secret) is None
    assert cache.required() is False
    _, other = create_key(cli_store, "other")
    clock.now = 1.5
    assert cache.required() is False  # "no keys" is remembered too, for the TTL only
    clock.now = 2.0
    assert cache.required() is True
    assert cache.lookup(other) is not None
    server_store.close()
    cli_store.close()


def test_lookups_do_not_read_the_database_within_the_ttl(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db")
    _, secret = create_key(store, "app")
    cache = KeyCache(store, ttl=3600, clock=Clock())
    cache.lookup(secret)
    reads = 0
    real_by_hash, real_keys = store.api_key_by_hash, store.api_keys

    def by_hash(h: str):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return real_by_hash(h)

    def keys(include_revoked: bool = False):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return real_keys(include_revoked)

    store.api_key_by_hash = by_hash  # type: ignore[method-assign]
    store.api_keys = keys  # type: ignore[method-assign]
    for _ in range(100):
        assert cache.required() and cache.lookup(secret) is not None
    assert reads == 0
    store.close()


def test_the_server_reads_keys_on_worker_threads_not_its_event_loop(tmp_path: Path) -> None:
    import threading

    import httpx2 as httpx

    from outcrop import Gateway, Settings
    from outcrop.providers.testing import FunctionModel
    from outcrop.serve.app import create_app

    from .serving import LiveServer

    store = Store(tmp_path / "o.db")
    _, secret = create_key(store, "app")
    readers: list[str] = []
    real_keys, real_by_hash = store.api_keys, store.api_key_by_hash

    def keys(include_revoked: bool = False):  # type: ignore[no-untyped-def]
        readers.append(threading.current_thread().name)
        return real_keys(include_revoked)

    def by_hash(h: str):  # type: ignore[no-untyped-def]
        readers.append(threading.current_thread().name)
        return real_by_hash(h)

    store.api_keys = keys  # type: ignore[method-assign]
    store.api_key_by_hash = by_hash  # type: ignore[method-assign]
    gw = Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={"fn": FunctionModel(lambda request: "ok")},
    )
    live = LiveServer(create_app(gw)).start()
    try:
        for token in (secret, "oc-wrong"):
            r = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == (200 if token == secret else 401)
    finally:
        live.stop()
        store.close()
    assert readers and all(name.startswith("outcrop-call") for name in readers), readers
