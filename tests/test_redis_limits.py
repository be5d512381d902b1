"""Rate limits and budgets kept in a real Redis (127.0.0.1:6379, or OUTCROP_TEST_REDIS_URL).

Each test works under its own key prefix and removes its keys after. Tests that take
Redis away start their own ``redis-server`` on a free port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from outcrop import Gateway, Settings, Store
from outcrop.errors import ConfigError, UserError
from outcrop.observe.store import TraceRow
from outcrop.providers.testing import FunctionModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import ApiKey, KeyLimits, create_key
from outcrop.serve.limits import Call, Denied, Grant, Limiter, limits_for
from outcrop.serve.redis_limits import RedisLimits, redact
from outcrop.types import ChatRequest

from .serving import LiveServer

URL = os.environ.get("OUTCROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DAY = 86400.0
T0 = 1_900_000_000.0  # 2030-03-17 17:46:40 UTC: a fixed clock (in the future: keys expire)


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(autouse=True)
def _redis_is_there() -> None:
    """Skip without Redis, or fail when OUTCROP_TEST_REDIS_REQUIRED=1 (CI, which starts it)."""
    if not _reachable(URL):
        reason = f"no Redis at {URL} (start redis-server, or set OUTCROP_TEST_REDIS_URL)"
        if os.environ.get("OUTCROP_TEST_REDIS_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"outcrop-test-{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def other(outcrop_home: Path, store: Store) -> Iterator[Store]:
    """The same database opened again, as a second replica opens it."""
    s = Store(outcrop_home / "outcrop.db")
    yield s
    s.close()


@pytest.fixture
def limits(store: Store, prefix: str, clock: Clock) -> Iterator[RedisLimits]:
    backend = RedisLimits(URL, store, prefix=prefix, clock=clock)
    yield backend
    backend.close()


def _key(store: Store, name: str, **limits: float) -> ApiKey:
    key, _ = create_key(store, name, limits=KeyLimits(**limits))  # type: ignore[arg-type]
    return key


def _row(
    key: ApiKey, started_at: float, tokens: tuple[int, int], cost: float | None = None
) -> TraceRow:
    return TraceRow(
        id=secrets.token_hex(8),
        started_at=started_at,
        requested_model="test",
        model="test:m",
        provider="test",
        stream=False,
        status="ok",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=cost,
        request={},
        api_key=key.id,
    )


def _call(
    backend: RedisLimits,
    store: Store,
    key: ApiKey,
    grant: Grant,
    tokens: tuple[int, int],
    **kw: float,
) -> TraceRow:
    """What the server does for a call: bind the grant to its trace, store the row, settle."""
    row = _row(key, backend.clock(), tokens, **kw)
    backend.bind(grant, row.id)
    store.record(row)
    backend.settle(grant, sum(tokens))
    return row


def test_requests_per_minute_are_one_window_for_two_replicas(
    store: Store, other: Store, prefix: str, clock: Clock
) -> None:
    a = RedisLimits(URL, store, prefix=prefix, clock=clock)
    b = RedisLimits(URL, other, prefix=prefix, clock=clock)
    try:
        key = _key(store, "rpm", requests_per_minute=3)
        a.admit(key)
        clock.now += 10
        b.admit(key)
        a.admit(key)
        with pytest.raises(Denied) as denied:
            b.admit(key)
        assert denied.value.status == 429 and denied.value.code == "rate_limit_exceeded"
        assert "3 requests per minute" in denied.value.message and "'rpm'" in denied.value.message
        assert denied.value.retry_after == pytest.approx(50)  # when the first one leaves
        clock.now += 50.5
        b.admit(key)  # the first request has left the window
        with pytest.raises(Denied):
            a.admit(key)
    finally:
        a.close()
        b.close()


def test_tokens_per_minute_count_finished_calls(
    store: Store, limits: RedisLimits, clock: Clock
) -> None:
    key = _key(store, "tpm", tokens_per_minute=100)
    grant = limits.admit(key)
    assert grant.cap == 100  # a call may not use more than the minute has left
    _call(limits, store, key, grant, (30, 40))
    assert limits.admit(key).cap == 30
    clock.now += 20
    _call(limits, store, key, limits.admit(key), (20, 15))
    with pytest.raises(Denied) as denied:
        limits.admit(key)
    assert "100 tokens per minute" in denied.value.message
    assert 0 < (denied.value.retry_after or 0) <= 42  # the first call's tokens leave then
    clock.now += 42
    assert limits.admit(key).cap == 65  # the first call left; the second's 35 remain


def test_a_budget_is_seeded_from_the_ledger_and_survives_losing_its_counter(
    store: Store, limits: RedisLimits, clock: Clock
) -> None:
    key = _key(store, "seeded", tokens_per_day=1000, tokens_per_month=5000)
    store.record(_row(key, T0 - 3600, (100, 200)))  # earlier today
    store.record(_row(key, T0 - 5 * DAY, (1000, 1000)))  # earlier this month
    grant = limits.admit(key, Call(50))
    assert grant.cap == 700 and grant.hold is not None  # 1000 - 300
    usage = limits.usage(key)
    assert usage["day"] == {"tokens": 300, "usd": 0.0}
    assert usage["month"] == {"tokens": 2300, "usd": 0.0}
    assert usage["held_tokens"] == 50 and usage["held_calls"] == 1
    _call(limits, store, key, grant, (10, 50))
    assert limits.usage(key)["day"]["tokens"] == 360
    assert limits.usage(key)["held_calls"] == 0  # the row gave the hold back
    # Redis restarted without its data: the counters come back from the ledger.
    spent_keys = list(limits.redis.scan_iter(match=limits.prefix + "spent:*"))
    assert len(spent_keys) == 2
    limits.redis.delete(*spent_keys)
    assert limits.admit(key).cap == 640
    assert limits.usage(key)["day"]["tokens"] == 360
    assert limits.usage(key)["month"]["tokens"] == 2360


def test_a_spent_budget_is_refused_with_the_figures(store: Store, limits: RedisLimits) -> None:
    key = _key(store, "spent", tokens_per_day=100)
    store.record(_row(key, T0 - 60, (60, 45)))
    with pytest.raises(Denied) as denied:
        limits.admit(key, Call())
    assert denied.value.status == 429 and denied.value.code == "insufficient_quota"
    assert denied.value.type == "insufficient_quota"
    assert "used 105 of its 100 tokens this day" in denied.value.message
    with pytest.raises(Denied):
        limits.admit(key)  # every call, reserving or not


def test_holds_keep_two_replicas_from_spending_the_same_tokens(
    store: Store, other: Store, prefix: str, clock: Clock
) -> None:
    a = RedisLimits(URL, store, prefix=prefix, clock=clock, hold_tokens=4096)
    b = RedisLimits(URL, other, prefix=prefix, clock=clock)
    try:
        key = _key(store, "race", tokens_per_day=100)
        store.record(_row(key, T0 - 60, (20, 20)))
        first = a.admit(key, Call(25))
        assert first.cap == 60 and first.hold  # may write 25 (its max_tokens), holds 25
        second = b.admit(key, Call())  # no max_tokens: holds all that is left
        assert second.cap == 35
        with pytest.raises(Denied) as denied:
            a.admit(key, Call(1))
        assert denied.value.status == 429 and denied.value.code == "budget_held"
        assert "held by 2 call(s) in flight" in denied.value.message
        assert denied.value.retry_after
        # The first call used less than it held: the rest comes back when its row is stored.
        _call(a, store, key, first, (5, 10))
        third = a.admit(key, Call(50))
        assert third.cap == 100 - 55 - 35  # spent 55, the second holds 35
        # A call that fails before it starts gives its hold back at once.
        a.settle(third, 0)
        deadline = time.time() + 5
        while a.usage(key)["held_calls"] != 1 and time.time() < deadline:
            time.sleep(0.01)
        assert a.usage(key)["held_tokens"] == 35
    finally:
        a.close()
        b.close()


def test_a_hold_left_by_a_replica_that_died_expires(
    store: Store, prefix: str, clock: Clock
) -> None:
    a = RedisLimits(URL, store, prefix=prefix, clock=clock, hold_seconds=600)
    key = _key(store, "orphan", tokens_per_day=100)
    a.admit(key, Call())  # its replica dies: never settled
    a.close()
    b = RedisLimits(URL, store, prefix=prefix, clock=clock)
    try:
        with pytest.raises(Denied):
            b.admit(key, Call())
        clock.now += 601
        assert b.admit(key, Call()).cap == 100
    finally:
        b.close()


def test_keys_expire(store: Store, limits: RedisLimits) -> None:
    key = _key(store, "ttl", requests_per_minute=10, tokens_per_day=100, tokens_per_month=1000)
    grant = limits.admit(key, Call(5))
    _call(limits, store, key, grant, (1, 2))
    r = limits.redis
    assert 0 < r.ttl(limits.prefix + f"rpm:{key.id}") <= 61
    expire_day = r.expiretime(next(r.scan_iter(match=limits.prefix + f"spent:{key.id}:day:*")))
    assert expire_day == 1_900_022_400 + 3600  # the end of the day, and an hour
    expire_month = r.expiretime(next(r.scan_iter(match=limits.prefix + f"spent:{key.id}:month:*")))
    assert expire_month == 1_901_232_000 + 3600  # 2030-04-01, and an hour


def test_dollar_budgets_hold_the_price_of_max_tokens(store: Store, limits: RedisLimits) -> None:
    key = _key(store, "usd", usd_per_day=1.0)
    store.record(_row(key, T0 - 60, (10, 10), cost=0.25))
    price = 1 / 256  # per output token (amounts a float holds exactly)
    first = limits.admit(key, Call(64, usd_per_output_token=price))
    assert first.cap == 192  # $0.75 left buys 192 tokens; it holds 64 of them ($0.25)
    second = limits.admit(key, Call(200, usd_per_output_token=price))
    assert second.cap == 128  # $0.50 left once the first holds its share
    with pytest.raises(Denied) as denied:
        limits.admit(key, Call(usd_per_output_token=price))
    assert denied.value.code == "budget_held"
    _call(limits, store, key, first, (5, 64), cost=0.375)
    _call(limits, store, key, second, (5, 128), cost=0.5)
    with pytest.raises(Denied) as denied:
        limits.admit(key, Call(usd_per_output_token=price))
    assert "spent $1.1250 of its $1.00 this day" in denied.value.message


def test_many_threads_on_two_replicas_never_overspend(
    store: Store, other: Store, prefix: str
) -> None:
    """Calls race from 16 threads through two replicas: the budget is passed by at most the
    prompt of the one call admitted with less left than its prompt."""
    budget, prompt = 2000, 7
    stores = [store, other]
    replicas = [RedisLimits(URL, s, prefix=prefix) for s in stores]
    key = _key(store, "crowd", tokens_per_day=budget)
    out: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        backend = replicas[n % 2]
        while True:
            try:
                grant = backend.admit(key, Call(60, prompt))
            except Denied as denied:
                if denied.code == "budget_held":
                    time.sleep(0.002)
                    continue
                with lock:
                    refused.append(denied.code)
                return
            assert grant.cap is not None
            written = min(grant.cap, 60)  # a model never writes past max_tokens
            time.sleep(0.001)
            row = _row(key, time.time(), (prompt, written))
            backend.bind(grant, row.id)
            stores[n % 2].record_later(row)
            backend.settle(grant, prompt + written)
            with lock:
                out.append(written)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert refused == ["insufficient_quota"] * 16
        other.flush()
        spent, _, calls = store.key_usage(key.id, 0)
        assert calls == len(out)
        assert sum(out) <= budget  # completions fit in the budget
        assert budget <= spent <= budget + prompt
        assert replicas[0].usage(key)["day"]["tokens"] == spent  # Redis agrees with the ledger
        assert replicas[0].usage(key)["held_calls"] == 0
    finally:
        for backend in replicas:
            backend.close()


# -- Redis going away --------------------------------------------------------------


class RedisServer:
    """A redis-server of our own on a free port, without persistence."""

    def __init__(self, folder: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while not _reachable(self.url):
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def test_redis_down_refuses_the_call_with_503_and_recovers(
    store: Store, own_redis: RedisServer, clock: Clock
) -> None:
    backend = RedisLimits(own_redis.url, store, clock=clock)
    try:
        key = _key(store, "down", tokens_per_day=1000)
        free = _key(store, "free")
        _call(backend, store, key, backend.admit(key, Call()), (100, 100))
        own_redis.stop()
        assert backend.admit(free) == Grant(free)  # a key without limits needs no Redis
        t0 = time.monotonic()
        with pytest.raises(Denied) as denied:
            backend.admit(key, Call())
        assert time.monotonic() - t0 < 5  # refused quickly, not after a long wait
        assert denied.value.status == 503 and denied.value.code == "limits_unavailable"
        assert denied.value.type == "server_error" and denied.value.retry_after
        assert own_redis.url.split("//")[1] in denied.value.message
        assert "Try again shortly" in denied.value.message
        own_redis.start()  # empty: it lost everything
        assert backend.admit(key, Call()).cap == 800  # seeded again from the ledger
    finally:
        backend.close()


def test_rows_counted_while_redis_was_stuck_are_recounted_from_the_ledger(
    store: Store, own_redis: RedisServer, clock: Clock
) -> None:
    backend = RedisLimits(own_redis.url, store, clock=clock, timeout=0.3)
    try:
        key = _key(store, "stuck", tokens_per_day=1000)
        _call(backend, store, key, backend.admit(key, Call(10)), (100, 10))
        assert own_redis.proc is not None
        grant = backend.admit(key, Call(10))
        os.kill(own_redis.proc.pid, signal.SIGSTOP)  # Redis hangs, keeping its data
        _call(backend, store, key, grant, (50, 10))  # stored in the ledger, not in Redis
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert backend.admit(key).cap == 1000 - 170
        assert backend.usage(key)["day"]["tokens"] == 170
        assert backend.usage(key)["held_calls"] == 0
    finally:
        backend.close()


def echo(request: ChatRequest) -> str:
    return f"You said: {request.messages[-1].text}"


def test_the_server_answers_503_while_redis_is_down_and_keeps_serving(
    store: Store, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTCROP_REDIS_URL", own_redis.url)
    gw = Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={"fn": FunctionModel(echo)},
    )
    _, limited = create_key(store, "limited", limits=KeyLimits(tokens_per_day=10_000))
    _, free = create_key(store, "free")
    app = create_app(gw)
    assert isinstance(app.state.server.limiter, RedisLimits)
    live = LiveServer(app).start()
    body = {"model": "fn:echo", "messages": [{"role": "user", "content": "hi"}]}

    def ask(secret: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"}
        return httpx.post(live.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)

    try:
        assert ask(limited).status_code == 200
        own_redis.stop()
        refused = ask(limited)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        error = refused.json()["error"]
        assert error["code"] == "limits_unavailable" and error["type"] == "server_error"
        assert "Redis" in error["message"]
        # The rest goes on: a key without limits, the health check.
        assert ask(free).status_code == 200
        assert httpx.get(live.url + "/health", timeout=5).status_code == 200
        own_redis.start()
        assert ask(limited).status_code == 200
    finally:
        live.stop()
    used, _, calls = store.key_usage(
        next(k["id"] for k in store.api_keys() if k["name"] == "limited"), 0
    )
    assert calls == 2 and used > 0


# -- choosing the backend, and bad settings ------------------------------------------


def test_the_backend_is_chosen_by_outcrop_redis_url(
    store: Store, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTCROP_REDIS_URL", raising=False)
    assert isinstance(limits_for(store, Settings()), Limiter)
    monkeypatch.setenv("OUTCROP_REDIS_URL", URL)
    monkeypatch.setenv("OUTCROP_REDIS_PREFIX", prefix)
    backend = limits_for(store, Settings())
    assert isinstance(backend, RedisLimits) and backend.prefix == prefix
    backend.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:1/0", "Cannot reach Redis at redis://127.0.0.1:1/0"),
        ("redis://:hunter2@127.0.0.1:1/0", "Cannot reach Redis at redis://:***@127.0.0.1:1/0"),
        ("http://127.0.0.1:6379", "is not a Redis URL; give one like redis://127.0.0.1:6379/0"),
        ("127.0.0.1:6379", "is not a Redis URL"),
        ("redis://127.0.0.1:port/0", "cannot be used"),
    ],
)
def test_a_bad_redis_url_is_one_clear_error(store: Store, url: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedisLimits(url, store)
    message = str(err.value)
    assert says in message
    assert "hunter2" not in message
    assert "OUTCROP_REDIS_URL" in message


def test_one_store_is_counted_by_one_backend(store: Store, limits: RedisLimits) -> None:
    with pytest.raises(UserError) as err:
        RedisLimits(URL, store)
    assert "already counts this store's calls" in str(err.value)


def test_redact() -> None:
    assert redact("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact("redis://host:1/0") == "redis://host:1/0"


def test_outcrop_serve_stops_at_start_up_when_redis_is_unreachable(outcrop_home: Path) -> None:
    env = {
        **os.environ,
        "OUTCROP_HOME": str(outcrop_home),
        "OUTCROP_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    env.pop("OUTCROP_RAISE_ERRORS", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "outcrop", "serve", "--port", str(port)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: Cannot reach Redis at redis://127.0.0.1:1/0")
    assert "start Redis there or fix OUTCROP_REDIS_URL" in lines[0]


def test_the_scale_out_guide_shows_what_redis_holds_and_the_real_error(
    store: Store, limits: RedisLimits, tmp_path: Path
) -> None:
    import re

    from outcrop import load_settings

    text = (Path(__file__).resolve().parent.parent / "docs" / "scale-out.md").read_text(
        encoding="utf-8"
    )
    (toml,) = [
        b
        for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S)
        if b.startswith("[storage]\nredis_url")
    ]
    (tmp_path / "outcrop.toml").write_text(toml, encoding="utf-8")
    assert load_settings(tmp_path / "outcrop.toml").storage.redis_url == (
        "redis://redis.internal:6379/0"
    )
    # The start-up error shown is the one outcrop prints.
    (shown,) = [line for line in text.splitlines() if line.startswith("Error: Cannot reach Redis")]
    with pytest.raises(ConfigError) as err:
        RedisLimits("redis://127.0.0.1:1/0", store)
    assert shown == "Error: " + str(err.value).replace("127.0.0.1:1", "redis.internal:6379")
    # The table of what Redis holds names the keys a limited call leaves.
    key = _key(store, "all", requests_per_minute=9, tokens_per_minute=900, tokens_per_day=900)
    grant = limits.admit(key, Call(5))
    row = _row(key, limits.clock(), (1, 2))
    limits.bind(grant, row.id)
    limits.store.record_later(row)  # stored later: the hold is still there when we look
    kinds = {
        k.removeprefix(limits.prefix).split(":")[0]
        for k in limits.redis.scan_iter(match=limits.prefix + "*")
    }
    store.flush()
    kinds |= {
        k.removeprefix(limits.prefix).split(":")[0]
        for k in limits.redis.scan_iter(match=limits.prefix + "*")
    }
    documented = set(re.findall(r"^\| `(\w+):KEY", text, flags=re.M))
    assert kinds == documented == {"rpm", "tpm", "spent", "held"}


def test_without_the_redis_extra_the_error_names_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outcrop.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    monkeypatch.setenv("OUTCROP_REDIS_URL", URL)
    with pytest.raises(MissingExtraError) as err:
        limits_for(store, Settings())
    assert "pip install 'outcrop[redis]'" in str(err.value)
    assert "OUTCROP_REDIS_URL" in str(err.value)


def test_a_stored_prompt_with_no_messages_is_held_by_its_rendered_text(
    store: Store, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outcrop.prompts import Prompt, PromptRegistry

    monkeypatch.setenv("OUTCROP_REDIS_URL", URL)
    monkeypatch.setenv("OUTCROP_REDIS_PREFIX", prefix)
    PromptRegistry(store).record(Prompt(name="greet", query="Say hello to {{ who }}. " * 40))
    gw = Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={"fn": FunctionModel(echo)},
    )
    _, secret = create_key(store, "budgeted", limits=KeyLimits(tokens_per_day=10_000))
    app = create_app(gw)
    limiter = app.state.server.limiter
    assert isinstance(limiter, RedisLimits)
    held: list[int] = []
    admit = limiter.admit

    def spy(key: ApiKey, call: Call | None = None) -> Grant:
        held.append(call.prompt_tokens if call is not None else -1)
        return admit(key, call)

    monkeypatch.setattr(limiter, "admit", spy)
    live = LiveServer(app).start()
    try:
        r = httpx.post(
            live.url + "/v1/chat/completions",
            json={
                "model": "fn:echo",
                "messages": [],
                "outcrop": {"prompt": "greet", "variables": {"who": "Ada"}},
            },
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].startswith(
            "You said: Say hello to Ada."
        )
        assert held and held[0] > 150  # the rendered prompt (720 characters), not zero
    finally:
        live.stop()
