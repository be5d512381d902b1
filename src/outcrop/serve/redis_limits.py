"""Rate limits and budgets kept in Redis, so that several ``outcrop serve`` replicas enforce one.

What is kept, under a prefix (``outcrop:`` by default) and per API key:

- ``rpm:{key}``: the requests of the last 60 seconds, a sorted set of request ids
  scored by time (a sliding window, as in-process);
- ``tpm:{key}``: tokens of finished calls per second of the last 60 seconds;
- ``held:{key}``: what calls in flight hold of the budgets, one field per call
  (tokens, US dollars, and a deadline after which a hold left by a replica that
  died is dropped);
- ``spent:{key}:day:{start}`` and ``spent:{key}:month:{start}``: the tokens and
  dollars spent in that period, as a base read from the trace ledger plus what
  replicas added since (``HINCRBY``/``HINCRBYFLOAT``); they expire after the period.

One Lua script admits a call in one round trip: it checks the windows and the
budgets against what is spent and what is held, counts the request, and holds
the call's share — its prompt (estimated) and its ``max_tokens``, capped to what
is left — atomically, so two replicas racing for the last of a budget cannot
both have it. The call's trace row settles it: when the row is stored, the
replica that made the call adds the row's tokens and cost to the counters and
drops the hold in one transaction.

The guarantee: a call is admitted only while spent + held is under the budget,
and it may write only what is left beyond that and its prompt. So across every
replica a key passes its token budget by at most the prompt of the one call that
was admitted with less left than its prompt — as one replica's in-process limiter
allows — plus whatever the prompt estimates (about four characters a token) fell
short. A call that sends no ``max_tokens`` holds ``hold_tokens`` (4,096) or what
is left, if less; it may write more than it holds (up to what was left when it
was admitted), so send ``max_tokens`` where concurrent calls must be held exactly.
A dollar budget caps and holds likewise at the model's prices, where outcrop
knows them.

A counter that is missing (the first call of a period, or Redis restarted and
lost it) is seeded from the ledger, so a Redis restart does not reset what a key
has spent. The seed never counts less than the ledger: a row stored while a
counter is being seeded may be counted twice, never missed.

Redis unreachable when a call is admitted refuses that call with 503 and a
Retry-After (budgets fail closed); other calls go on, and the next call after
Redis is back is checked normally. Rows stored while Redis was away are counted
again from the ledger: the counters they touched are dropped, to be reseeded.
"""

from __future__ import annotations

import calendar
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, MissingExtraError, UserError
from ..observe.store import Store, TraceRow
from .keys import ApiKey, KeyLimits
from .limits import Call, Denied, Grant, Limits, _day_start, _month_start

if TYPE_CHECKING:
    import redis

__all__ = ["RedisLimits", "redact"]

log = logging.getLogger("outcrop.serve")

_PERIODS = ("day", "month")

# KEYS: rpm, tpm, held, spent (day), spent (month)
# ARGV: now, rpm, tpm, tokens/day, usd/day, tokens/month, usd/month (-1: no limit),
#       max_tokens (-1: not sent), hold_tokens, usd per output token (-1: unknown), request id,
#       hold deadline, hold (0/1), prompt tokens, usd per input token (-1: unknown)
# Returns {"ok", cap (-1: none), held tokens}, {"seed", period, delta tokens, delta usd, ...},
# or a refusal: {"rpm"|"tpm", retry_after, count} or {"tokens"|"usd"|"held", period, spent,
# held, calls holding}. Numbers go back as strings: Redis would truncate Lua floats.
_ADMIT = """
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
if rpm >= 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', tostring(tonumber(oldest[2]) + 60 - now), tostring(n)}
  end
end
local left = nil
if tpm >= 0 then
  local used = 0
  local first = nil
  local buckets = redis.call('HGETALL', KEYS[2])
  for i = 1, #buckets, 2 do
    local second = tonumber(buckets[i])
    if second + 1 <= now - 60 then
      redis.call('HDEL', KEYS[2], buckets[i])
    else
      used = used + tonumber(buckets[i + 1])
      if first == nil or second < first then first = second end
    end
  end
  if used >= tpm then
    return {'tpm', tostring(first + 61 - now), tostring(used)}
  end
  left = tpm - used
end
local held_tokens = 0
local held_usd = 0
local holding = 0
local holds = redis.call('HGETALL', KEYS[3])
for i = 1, #holds, 2 do
  local t, u, deadline = string.match(holds[i + 1], '^(%S+) (%S+) (%S+)$')
  if tonumber(deadline) <= now then
    redis.call('HDEL', KEYS[3], holds[i])
  else
    held_tokens = held_tokens + tonumber(t)
    held_usd = held_usd + tonumber(u)
    holding = holding + 1
  end
end
local seeds = {}
local budgeted = false
local price = tonumber(ARGV[10])
local prompt = 0
if ARGV[13] == '1' then prompt = tonumber(ARGV[14]) end
local prompt_usd = 0
if tonumber(ARGV[15]) > 0 then prompt_usd = prompt * tonumber(ARGV[15]) end
for p = 0, 1 do
  local token_limit = tonumber(ARGV[4 + 2 * p])
  local usd_limit = tonumber(ARGV[5 + 2 * p])
  if token_limit >= 0 or usd_limit >= 0 then
    budgeted = true
    local v = redis.call('HMGET', KEYS[4 + p], 'bt', 'bu', 'dt', 'du')
    if not v[1] then
      table.insert(seeds, tostring(p))
      table.insert(seeds, v[3] or '0')
      table.insert(seeds, v[4] or '0')
    else
      local tokens = tonumber(v[1]) + tonumber(v[3] or '0')
      local usd = tonumber(v[2]) + tonumber(v[4] or '0')
      if token_limit >= 0 then
        if tokens >= token_limit then
          return {'tokens', tostring(p), tostring(tokens), '0', '0'}
        end
        if tokens + held_tokens >= token_limit then
          return {'held', tostring(p), tostring(tokens), tostring(held_tokens), tostring(holding)}
        end
        local rest = math.max(1, token_limit - tokens - held_tokens - prompt)
        if left == nil or rest < left then left = rest end
      end
      if usd_limit >= 0 then
        if usd >= usd_limit then
          return {'usd', tostring(p), tostring(usd), '0', '0'}
        end
        if usd + held_usd >= usd_limit then
          return {'held', tostring(p), tostring(usd), tostring(held_usd), tostring(holding)}
        end
        if price > 0 then
          local rest = math.floor((usd_limit - usd - held_usd - prompt_usd) / price + 1e-9)
          rest = math.max(1, rest)
          if left == nil or rest < left then left = rest end
        end
      end
    end
  end
end
if #seeds > 0 then
  table.insert(seeds, 1, 'seed')
  return seeds
end
redis.call('ZADD', KEYS[1], now, ARGV[11])
redis.call('EXPIRE', KEYS[1], 61)
local hold = 0
if budgeted and ARGV[13] == '1' then
  local out = tonumber(ARGV[8])
  if out < 0 then out = tonumber(ARGV[9]) end
  if left ~= nil and left < out then out = left end
  hold = prompt + out
  local usd = prompt_usd
  if price > 0 then usd = usd + out * price end
  redis.call('HSET', KEYS[3], ARGV[11], hold .. ' ' .. usd .. ' ' .. ARGV[12])
  redis.call('EXPIREAT', KEYS[3], math.ceil(tonumber(ARGV[12])))
end
if left == nil then left = -1 end
return {'ok', tostring(left), tostring(hold)}
"""

# KEYS: spent; ARGV: base tokens, base usd, expire at. Sets the base unless another replica
# seeded it first.
_SEED = """
if redis.call('HEXISTS', KEYS[1], 'bt') == 0 then
  redis.call('HSET', KEYS[1], 'bt', ARGV[1], 'bu', ARGV[2])
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


def redact(url: str) -> str:
    """``url`` without its password, to show in messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unreadable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _limit(value: float | None) -> str:
    return "-1" if value is None else repr(value)


class RedisLimits(Limits):
    """Rate limits and budgets in Redis at ``url``, shared by every replica that uses it.

    ``store`` is the trace store the replicas share: budgets are seeded from its
    ledger and settled from the rows it stores. ``prefix`` starts every key.
    ``hold_tokens`` is what a call that sends no ``max_tokens`` holds of a token
    budget while it runs (or what is left, if less); ``hold_seconds`` is how long
    a hold outlives a replica that died before its call finished.
    """

    shared = True
    # The stores whose rows a RedisLimits counts: a second one on the same store would count
    # every row twice.
    _counting: ClassVar[weakref.WeakSet[Store]] = weakref.WeakSet()

    def __init__(
        self,
        url: str,
        store: Store,
        *,
        prefix: str = "outcrop:",
        hold_tokens: int = 4096,
        hold_seconds: float = 900.0,
        clock: Callable[[], float] = time.time,
        timeout: float = 1.0,
    ):
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise MissingExtraError("Limits in Redis (OUTCROP_REDIS_URL)", "redis") from None
        if not prefix:
            raise ConfigError(
                "the Redis key prefix is empty; set OUTCROP_REDIS_PREFIX to e.g. 'outcrop:' "
                "(or unset it for the default)"
            )
        self.url = url
        self.store = store
        self.prefix = prefix
        self.hold_tokens = hold_tokens
        self.hold_seconds = hold_seconds
        self.clock = clock
        self._redis_errors: tuple[type[Exception], ...] = (redis.RedisError,)
        where = redact(url)
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"OUTCROP_REDIS_URL / [storage] redis_url is {where!r}, which is not a Redis "
                "URL; give one like redis://127.0.0.1:6379/0 (rediss:// for TLS)"
            )
        try:
            self.redis: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One quick retry on a dropped connection, then the request is refused: a
                # request must not wait long on a Redis that is down.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
                decode_responses=True,
            )
            self.redis.ping()
        except ValueError as exc:
            raise ConfigError(
                f"OUTCROP_REDIS_URL / [storage] redis_url {where!r} cannot be used ({exc}); "
                "give one like redis://127.0.0.1:6379/0"
            ) from None
        except redis.RedisError as exc:
            raise ConfigError(
                f"Cannot reach Redis at {where} ({exc}); start Redis there or fix "
                "OUTCROP_REDIS_URL / [storage] redis_url (unset it to keep limits in this "
                "process, for a single replica)"
            ) from None
        if store in RedisLimits._counting:
            self.redis.close()
            raise UserError(
                "Another RedisLimits already counts this store's calls (each would count them "
                "once); close it first, or give each one its own Store."
            )
        RedisLimits._counting.add(store)
        self._admit = self.redis.register_script(_ADMIT)
        self._seed = self.redis.register_script(_SEED)
        self._lock = threading.Lock()
        self._watched: dict[str, KeyLimits] = {}  # keys admitted here, whose rows count
        self._bound: dict[str, tuple[str, str]] = {}  # trace id -> (key id, hold id)
        self._stale: set[str] = set()  # spent:… counters that missed rows while Redis was away
        self._stale_holds: list[tuple[str, str]] = []  # (key id, hold id) to drop
        self._giver: threading.Thread | None = None
        store.subscribe(self._on_rows)

    # -- keys ------------------------------------------------------------------------

    def _key(self, kind: str, key_id: str) -> str:
        return f"{self.prefix}{kind}:{key_id}"

    def _spent_key(self, key_id: str, period: str, start: float) -> str:
        return f"{self.prefix}spent:{key_id}:{period}:{int(start)}"

    @staticmethod
    def _starts(now: float) -> tuple[float, float]:
        return _day_start(now), _month_start(now)

    @staticmethod
    def _ends(now: float) -> tuple[float, float]:
        """When the day and the month that hold ``now`` end (an hour later: clocks differ)."""
        day = _day_start(now) + 86400
        t = time.gmtime(now)
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        month_end = float(calendar.timegm((year, month, 1, 0, 0, 0)))
        return day + 3600, month_end + 3600

    # -- admitting -------------------------------------------------------------------

    def admit(self, key: ApiKey, call: Call | None = None) -> Grant:
        limits = key.limits
        if limits == KeyLimits():
            return Grant(key)  # nothing to count: Redis is not asked
        with self._lock:
            self._watched[key.id] = limits
        try:
            self._reconcile()
            return self._admit_once(key, call)
        except self._redis_errors as exc:
            log.warning("Redis at %s failed while admitting a call: %s", redact(self.url), exc)
            raise Denied(
                503,
                f"Rate limits and budgets are kept in Redis ({redact(self.url)}), which did not "
                "answer; this request was refused rather than let through unchecked. Try again "
                "shortly; if it goes on, the server's operator should check Redis.",
                "limits_unavailable",
                retry_after=2.0,
            ) from None

    def _admit_once(self, key: ApiKey, call: Call | None) -> Grant:
        limits = key.limits
        asked = call or Call()
        hold_id = secrets.token_hex(8)
        waits = [0.01, 0.02, 0.04, 0.08]  # for calls that are over but not yet counted
        for _ in range(8):  # seeding missing counters, waiting for holds, then admitting
            now = self.clock()
            starts = self._starts(now)
            result = self._admit(
                keys=[
                    self._key("rpm", key.id),
                    self._key("tpm", key.id),
                    self._key("held", key.id),
                    *(self._spent_key(key.id, p, s) for p, s in zip(_PERIODS, starts, strict=True)),
                ],
                args=[
                    repr(now),
                    _limit(limits.requests_per_minute),
                    _limit(limits.tokens_per_minute),
                    _limit(limits.tokens_per_day),
                    _limit(limits.usd_per_day),
                    _limit(limits.tokens_per_month),
                    _limit(limits.usd_per_month),
                    _limit(asked.max_tokens),
                    str(self.hold_tokens),
                    _limit(asked.usd_per_output_token),
                    hold_id,
                    repr(now + self.hold_seconds),
                    "0" if call is None else "1",
                    str(asked.prompt_tokens),
                    _limit(asked.usd_per_input_token),
                ],
            )
            verdict = result[0]
            if verdict == "seed":
                self._seed_counters(key.id, now, result[1:])
                continue
            if verdict == "ok":
                cap = int(float(result[1]))
                held = int(float(result[2]))
                return Grant(key, None if cap < 0 else cap, hold_id if held > 0 else None)
            if verdict == "held" and waits:
                # A call that has just finished holds its share until its trace row is
                # stored (a few milliseconds); a client that sends its next request at once,
                # here or on another replica, should not be refused for that.
                self.store.flush()
                time.sleep(waits.pop(0))
                continue
            raise self._refusal(key, verdict, result[1:])
        raise RuntimeError("the budget counters could not be seeded")  # pragma: no cover

    def _seed_counters(self, key_id: str, now: float, missing: list[str]) -> None:
        """Seed each missing counter from the ledger: base = ledger - what replicas added
        since it was read as missing (``delta``, read before the ledger), so a row counts
        once, or twice if it was stored between the two reads, never not at all."""
        starts = self._starts(now)
        ends = self._ends(now)
        for i in range(0, len(missing), 3):
            p = int(missing[i])
            delta_tokens, delta_usd = int(float(missing[i + 1])), float(missing[i + 2])
            tokens, usd, _ = self.store.key_usage(key_id, starts[p])
            self._seed(
                keys=[self._spent_key(key_id, _PERIODS[p], starts[p])],
                args=[str(tokens - delta_tokens), repr(usd - delta_usd), str(int(ends[p]))],
            )

    def _refusal(self, key: ApiKey, verdict: str, detail: list[str]) -> Denied:
        limits = key.limits
        if verdict == "rpm":
            return Denied(
                429,
                f"Rate limit reached: {limits.requests_per_minute} requests per minute for "
                f"key {key.name!r}. Try again shortly.",
                "rate_limit_exceeded",
                retry_after=max(0.1, float(detail[0])),
            )
        if verdict == "tpm":
            return Denied(
                429,
                f"Rate limit reached: {limits.tokens_per_minute} tokens per minute for key "
                f"{key.name!r}. Try again shortly.",
                "rate_limit_exceeded",
                retry_after=max(0.1, float(detail[0])),
            )
        per = _PERIODS[int(detail[0])]
        if verdict == "tokens":
            limit = limits.tokens_per_day if per == "day" else limits.tokens_per_month
            return Denied(
                429,
                f"Budget exhausted: key {key.name!r} used {int(float(detail[1])):,} of its "
                f"{limit:,} tokens this {per}.",
                "insufficient_quota",
            )
        if verdict == "usd":
            usd_limit = limits.usd_per_day if per == "day" else limits.usd_per_month
            return Denied(
                429,
                f"Budget exhausted: key {key.name!r} spent ${float(detail[1]):.4f} of its "
                f"${usd_limit:.2f} this {per}.",
                "insufficient_quota",
            )
        calls = int(detail[3])
        return Denied(
            429,
            f"The rest of key {key.name!r}'s budget this {per} is held by {calls} call(s) in "
            "flight; try again in a moment (a smaller max_tokens holds less).",
            "budget_held",
            retry_after=1.0,
        )

    # -- settling --------------------------------------------------------------------

    def bind(self, grant: Grant, trace_id: str) -> None:
        grant.trace_id = trace_id
        if grant.key is None or grant.hold is None:
            return
        with self._lock:
            self._bound[trace_id] = (grant.key.id, grant.hold)

    def settle(self, grant: Grant, tokens: int) -> None:
        """Tokens are counted from the call's trace row, which also gives its hold back; a
        hold whose call never got a row (it failed before it started) is given back here."""
        if grant.key is None or grant.hold is None or grant.trace_id is not None:
            return
        with self._lock:
            self._stale_holds.append((grant.key.id, grant.hold))
            if self._giver is not None and self._giver.is_alive():
                return  # it gives this one back too, or the next admit does
            self._giver = threading.Thread(
                target=self._give_back, name="outcrop-redis-hold", daemon=True
            )
            self._giver.start()

    def _give_back(self) -> None:
        try:
            self._reconcile()
        except self._redis_errors as exc:
            log.warning(
                "Redis at %s: holds stay until Redis is next reached: %s", redact(self.url), exc
            )

    def _on_rows(self, rows: list[TraceRow]) -> None:
        """A batch of rows is stored: count the tokens and cost of those made with a key."""
        with self._lock:
            mine = [(r, self._watched[r.api_key]) for r in rows if r.api_key in self._watched]
            holds = {r.id: self._bound.pop(r.id, None) for r in rows}
        if not mine:
            return
        now = self.clock()
        pipe = self.redis.pipeline(transaction=True)
        touched: set[str] = set()
        for row, limits in mine:
            key_id = str(row.api_key)
            tokens = row.input_tokens + row.output_tokens
            usd = row.cost_usd or 0.0
            if limits.tokens_per_minute is not None and tokens:
                tpm = self._key("tpm", key_id)
                pipe.hincrby(tpm, str(int(now)), tokens)
                pipe.expire(tpm, 62)
            budgets = (
                (limits.tokens_per_day, limits.usd_per_day),
                (limits.tokens_per_month, limits.usd_per_month),
            )
            for period, start, end, (token_limit, usd_limit) in zip(
                _PERIODS,
                self._starts(row.started_at),
                self._ends(row.started_at),
                budgets,
                strict=True,
            ):
                if token_limit is None and usd_limit is None:
                    continue
                spent = self._spent_key(key_id, period, start)
                touched.add(spent)
                pipe.hincrby(spent, "dt", tokens)
                pipe.hincrbyfloat(spent, "du", usd)
                pipe.expireat(spent, int(end))
            bound = holds.get(row.id)
            if bound is not None:
                pipe.hdel(self._key("held", bound[0]), bound[1])
        try:
            pipe.execute()
        except self._redis_errors as exc:
            # These rows are in the ledger but not in the counters: drop the counters once
            # Redis answers again, so they are seeded from the ledger, and the holds with them.
            log.warning(
                "Redis at %s failed while counting %d call(s); their budgets are recounted from "
                "the ledger once it answers: %s",
                redact(self.url),
                len(mine),
                exc,
            )
            with self._lock:
                self._stale.update(touched)
                self._stale_holds.extend(b for b in holds.values() if b is not None)

    def _reconcile(self) -> None:
        """Drop counters that missed rows and holds whose calls are over (Redis was away)."""
        with self._lock:
            if not self._stale and not self._stale_holds:
                return
            stale, self._stale = self._stale, set()
            holds, self._stale_holds = self._stale_holds, []
        try:
            pipe = self.redis.pipeline(transaction=False)
            for spent in stale:
                pipe.delete(spent)
            for key_id, hold in holds:
                pipe.hdel(self._key("held", key_id), hold)
            pipe.execute()
        except BaseException:
            with self._lock:
                self._stale |= stale
                self._stale_holds.extend(holds)
            raise

    # -- the rest --------------------------------------------------------------------

    def usage(self, key: ApiKey, now: float | None = None) -> dict[str, Any]:
        """What Redis holds for ``key`` now: spent tokens and dollars per period (None where
        the counter is missing), and what calls in flight hold."""
        now = self.clock() if now is None else now
        out: dict[str, Any] = {}
        for period, start in zip(_PERIODS, self._starts(now), strict=True):
            v = self.redis.hmget(self._spent_key(key.id, period, start), "bt", "bu", "dt", "du")
            if v[0] is None:
                out[period] = None
            else:
                out[period] = {
                    "tokens": int(v[0]) + int(v[2] or 0),
                    "usd": float(v[1] or 0.0) + float(v[3] or 0.0),
                }
        holds = self.redis.hgetall(self._key("held", key.id))
        out["held_tokens"] = sum(int(float(h.split()[0])) for h in holds.values())
        out["held_calls"] = len(holds)
        return out

    def close(self) -> None:
        self.store.unsubscribe(self._on_rows)
        RedisLimits._counting.discard(self.store)
        self.redis.close()
