"""Online evaluation of live traffic: sampling, scoring, alerts, the webhook, the API and the
Monitor page's panel. Test doubles answer as the app's model and as a deterministic judge."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import pytest

from outcrop import Gateway, Settings, Store, load_settings
from outcrop.errors import ConfigError, InvalidRequestError, ProviderError
from outcrop.evals.metrics import METRICS, build_metric
from outcrop.evals.suite import MetricSpec
from outcrop.gateway import TraceInfo, new_id
from outcrop.observe.online import LIVE_METRICS, OnlineEvaluator, parse_monitor
from outcrop.observe.store import TraceRow
from outcrop.providers.testing import FunctionModel, TestModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import create_key
from outcrop.types import ChatRequest

from .serving import LiveServer
from .test_ui import artifacts, browser, page, shot  # noqa: F401  (the Playwright fixtures)

if TYPE_CHECKING:
    from playwright.sync_api import Page

DOCS = Path(__file__).resolve().parent.parent / "docs"
ANSWER = "Paris is the capital of France."


class Judge(FunctionModel):
    """A judge that gives the verdict it is told to, and remembers what it was shown."""

    def __init__(self) -> None:
        super().__init__(self._verdict)
        self.score = 4
        self.gate: threading.Event | None = None  # when set, each verdict waits for it
        self.entered = threading.Event()

    def _verdict(self, request: ChatRequest) -> str:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        return json.dumps({"reason": f"graded {self.score}", "score": self.score})


@pytest.fixture
def judge() -> Judge:
    return Judge()


@pytest.fixture
def app_model() -> TestModel:
    return TestModel(default=ANSWER)


@pytest.fixture
def gw(store: Store, app_model: TestModel, judge: Judge) -> Gateway:
    return Gateway(
        settings=Settings(default_model="app:chat"),
        store=store,
        providers={"app": app_model, "judge": judge},
        sleep=lambda s: None,
    )


def monitor(**online: Any) -> dict[str, Any]:
    """A [monitor] table: online evaluation of every call with the judge, unless told."""
    settings: dict[str, Any] = {
        "sample_rate": 1.0,
        "metrics": ["answer_relevance"],
        "judge_model": "judge:strict",
    }
    settings.update(online)
    return {"online_eval": settings}


def evaluator(gw: Gateway, data: dict[str, Any], **kwargs: Any) -> OnlineEvaluator:
    return OnlineEvaluator(gw, parse_monitor(data), **kwargs)


def scores(store: Store) -> list[dict[str, Any]]:
    return store.online_scores(0, time.time() + 3600)


class Hook:
    """A real webhook receiver on 127.0.0.1: keeps each JSON body, answers ``status``."""

    def __init__(self, status: int = 200):
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.paths.append(self.path)
                hook.bodies.append(json.loads(self.rfile.read(length)))
                assert self.headers["Content-Type"] == "application/json"
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t-token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


# -- sampling ---------------------------------------------------------------------------


def test_sampling_takes_the_configured_share_and_every_replica_agrees(
    gw: Gateway, store: Store
) -> None:
    data = monitor(sample_rate=0.2, metrics=["tokens"])
    with evaluator(gw, data) as ev:
        ids = [new_id() for _ in range(1500)]
        for trace_id in ids:
            store.record_later(
                TraceRow(
                    id=trace_id,
                    started_at=time.time(),
                    requested_model="app:chat",
                    model="app:chat",
                    stream=False,
                    status="ok",
                    request={"messages": [{"role": "user", "content": "hi"}]},
                    response="hello",
                    input_tokens=1,
                    output_tokens=1,
                )
            )
        assert ev.drain(timeout=60)
        status = ev.status()
    chosen = {i for i in ids if ev.sampled(i)}
    # Binomial(1500, 0.2): 300 ± 15.5; five standard deviations either side.
    assert 223 <= len(chosen) <= 377
    assert status["eligible"] == 1500 and status["sampled"] == len(chosen)
    assert status["scored"] == len(chosen) and status["dropped"] == 0
    assert {s["trace_id"] for s in scores(store)} == chosen

    # Another replica with the same settings takes the same calls; another seed does not.
    replica = evaluator(gw, data)
    assert [replica.sampled(i) for i in ids] == [ev.sampled(i) for i in ids]
    other = evaluator(gw, monitor(sample_rate=0.2, metrics=["tokens"], seed=7))
    assert {i for i in ids if other.sampled(i)} != chosen
    # The share holds on fixed ids too, exactly reproducible.
    fixed = sum(replica.sampled(f"call-{n}") for n in range(20000))
    assert abs(fixed / 20000 - 0.2) < 0.01
    assert not any(evaluator(gw, monitor(sample_rate=0.0)).sampled(i) for i in ids)


def test_only_finished_chat_calls_of_the_chosen_models_and_prompts_are_scored(
    gw: Gateway, store: Store, app_model: TestModel
) -> None:
    data = monitor(metrics=["tokens"], models=["app:*"], prompts=["support@2", "faq"])
    with evaluator(gw, data) as ev:
        kept = [
            gw.chat("a", trace=TraceInfo(prompt_name="support", prompt_version=2)).id,
            gw.chat("b", trace=TraceInfo(prompt_name="faq", prompt_version=9)).id,
        ]
        gw.chat("c", trace=TraceInfo(prompt_name="support", prompt_version=1))  # other version
        gw.chat("d")  # no prompt
        gw.chat("e", model="judge:strict", trace=TraceInfo(prompt_name="faq"))  # other model
        gw.chat("f", trace=TraceInfo(prompt_name="faq", kind="eval"))  # an eval's call
        app_model.replies.append(ProviderError("upstream is down", status_code=400))
        with pytest.raises(ProviderError):
            gw.chat("g", trace=TraceInfo(prompt_name="faq"), fallbacks=False)  # failed
        assert ev.drain()
    assert {s["trace_id"] for s in scores(store)} == set(kept)
    assert ev.status()["eligible"] == 2


# -- scoring ----------------------------------------------------------------------------


def test_each_metric_is_scored_and_stored_and_judge_calls_are_not_sampled(
    gw: Gateway, store: Store, judge: Judge
) -> None:
    data = monitor(
        metrics=[
            "answer_relevance",
            {"name": "judge", "label": "polite", "rubric": "The answer is polite."},
            "json_valid",
            "latency_ms",
            "tokens",
            "cost",
        ]
    )
    with evaluator(gw, data) as ev:
        calls = [
            gw.chat(f"What is the capital of France? ({n})", trace=TraceInfo(prompt_name="geo"))
            for n in range(3)
        ]
        assert ev.drain()
        store.flush()  # the judge calls' own traces have been offered to the sampler too
        status = ev.status()
    rows = scores(store)
    assert len(rows) == 3 * 6
    by = {(r["trace_id"], r["metric"]): r for r in rows}
    for call in calls:
        assert by[(call.id, "answer_relevance")]["score"] == 0.75  # 4 on the 1-5 scale
        assert by[(call.id, "answer_relevance")]["reason"] == "graded 4"
        assert by[(call.id, "polite")]["score"] == 0.75
        assert by[(call.id, "json_valid")]["score"] == 0.0
        trace = store.get(call.id)
        assert trace is not None
        assert by[(call.id, "latency_ms")]["score"] == pytest.approx(trace.latency_ms)
        assert by[(call.id, "tokens")]["score"] == trace.input_tokens + trace.output_tokens
        assert by[(call.id, "cost")]["score"] == 0.0
        assert by[(call.id, "tokens")]["model"] == "app:chat"
        assert by[(call.id, "tokens")]["prompt_name"] == "geo"
    # Each judge call is a trace of its own, of kind judge, linked to the call it scored,
    # and none of them was sampled in turn.
    judged = [t for t in store.recent(limit=100) if t.kind == "judge"]
    assert len(judged) == 3 * 2
    assert sorted(t.parent_id or "" for t in judged) == sorted([c.id for c in calls] * 2)
    assert {r["trace_id"] for r in rows} == {c.id for c in calls}
    assert status["seen"] == 3 + 6 and status["sampled"] == 3 and status["scored"] == 3
    # The judge saw the live question and answer.
    shown = judge.requests[0].messages[-1].text
    assert "What is the capital of France?" in shown and ANSWER in shown


def test_a_judge_that_fails_leaves_no_score_and_says_why(
    gw: Gateway, store: Store, judge: Judge
) -> None:
    judge.fn = lambda request: ProviderError("judge is down", status_code=400)
    with evaluator(gw, monitor(metrics=["answer_relevance", "tokens"])) as ev:
        call = gw.chat("hi")
        assert ev.drain()
        assert ev.status()["unscored"] == 1 and ev.status()["failed"] == 0
    by = {r["metric"]: r for r in scores(store) if r["trace_id"] == call.id}
    assert by["answer_relevance"]["score"] is None
    assert "judge is down" in by["answer_relevance"]["reason"]
    assert by["tokens"]["score"] is not None


def test_a_full_queue_drops_and_counts_and_never_blocks_the_calls(
    gw: Gateway, store: Store, judge: Judge, caplog: pytest.LogCaptureFixture
) -> None:
    judge.gate = threading.Event()
    with evaluator(gw, monitor(queue_size=2)) as ev, caplog.at_level(logging.WARNING):
        gw.chat("first")
        assert judge.entered.wait(timeout=10)  # the worker is busy with the first call
        t0 = time.perf_counter()
        for n in range(5):
            gw.chat(f"more {n}")
        store.flush()
        assert time.perf_counter() - t0 < 5  # the calls did not wait for the judge
        status = ev.status()
        assert (status["sampled"], status["queued"], status["dropped"]) == (6, 2, 3)
        judge.gate.set()
        assert ev.drain()
        assert ev.status()["scored"] == 3
    assert len(scores(store)) == 3
    assert "queue of 2 calls is full" in caplog.text


def test_close_scores_what_is_queued_and_stops(gw: Gateway, store: Store) -> None:
    ev = evaluator(gw, monitor()).start()
    for n in range(3):
        gw.chat(f"q{n}")
    store.flush()
    ev.close(timeout=30)
    assert len(scores(store)) == 3
    assert not any(t.is_alive() for t in ev._threads)
    gw.chat("after close")
    store.flush()
    assert len(scores(store)) == 3  # no longer listening


# -- alerts -----------------------------------------------------------------------------


def test_an_alert_opens_once_and_resolves_once_with_the_webhook_told(
    gw: Gateway, store: Store, judge: Judge, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    data = monitor()
    data["alerts"] = [{"metric": "answer_relevance", "below": 0.5, "window": 5, "min_count": 3}]
    data["webhook_url"] = hook.url
    rule = "mean(answer_relevance) < 0.5 over the last 5 scores"
    with evaluator(gw, data) as ev, caplog.at_level(logging.WARNING, logger="outcrop.online"):
        judge.score = 1  # 0 on the 0..1 scale
        for n in range(2):
            gw.chat(f"bad {n}")
        assert ev.drain()
        assert store.alerts() == []  # two scores: fewer than min_count
        for n in range(6):
            gw.chat(f"bad {n + 2}")
        assert ev.drain()
        (alert,) = store.alerts()
        assert alert["closed_at"] is None and alert["rule"] == rule
        assert alert["value"] == 0.0 and alert["threshold"] == 0.5
        assert "mean answer_relevance of the last 3 scores is 0, below 0.5" in alert["detail"]
        assert "alert opened" in caplog.text

        judge.score = 5  # recovers: [0, 0, 1, 1, 1] has a mean of 0.6 after three
        for n in range(6):
            gw.chat(f"good {n}")
        assert ev.drain()
    (closed,) = store.alerts()
    assert closed["id"] == alert["id"] and closed["closed_at"] is not None
    assert closed["closed_value"] == pytest.approx(0.6)
    assert store.alerts(open_only=True) == []
    assert [b["event"] for b in hook.bodies] == ["alert.opened", "alert.resolved"]
    opened = hook.bodies[0]["alert"]
    assert opened["id"] == alert["id"] and opened["rule"] == rule and opened["value"] == 0.0
    assert hook.bodies[1]["alert"]["closed_value"] == pytest.approx(0.6)
    assert hook.paths == ["/hooks/s3cr3t-token"] * 2
    assert "alert resolved" in caplog.text


def test_a_time_window_forgets_old_scores(gw: Gateway, store: Store) -> None:
    now = [1_800_000_000.0]
    data = monitor(metrics=["tokens"])
    data["alerts"] = [{"metric": "tokens", "above": 20, "window_minutes": 10, "min_count": 2}]
    with evaluator(gw, data, clock=lambda: now[0]) as ev:
        for _ in range(2):
            gw.chat("a long question " * 10)
            now[0] += 60
        assert ev.drain()
        (alert,) = store.alerts(open_only=True)
        assert "over the last 10 minutes (2 scores)" in alert["detail"]
        now[0] += 11 * 60  # the long questions leave the window
        gw.chat("short")
        assert ev.drain()
        assert len(store.alerts(open_only=True)) == 1  # one score: too few to decide
        gw.chat("short again")
        assert ev.drain()
    (closed,) = store.alerts()
    assert closed["closed_at"] == now[0] and closed["closed_value"] < 20


def test_another_replica_does_not_open_the_same_alert_again(gw: Gateway, store: Store) -> None:
    data = monitor(metrics=["tokens"])
    data["alerts"] = [{"metric": "tokens", "above": 1, "window": 3, "min_count": 1}]
    first, second = evaluator(gw, data), evaluator(gw, data)
    first.score(store.get(gw.chat("one two three").id))  # type: ignore[arg-type]
    (rule,) = first.settings.alerts
    assert second.check(rule) is None  # already open: nothing changes
    assert len(store.alerts()) == 1


def test_a_failing_webhook_is_logged_not_raised(
    gw: Gateway, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    down = Hook(status=503)
    refusing = Hook(status=404)
    closed = Hook()
    closed.close()  # nothing listens on its port any more
    try:
        for url, tries, why in (
            (down.url, 2, "HTTP 503"),
            (refusing.url, 1, "HTTP 404"),
            (closed.url, 2, "ConnectionRefusedError"),
        ):
            data = monitor(metrics=["tokens"])
            data["alerts"] = [{"metric": "tokens", "above": 0, "window": 1, "min_count": 1}]
            data.update(webhook_url=url, webhook_retries=1, webhook_timeout_s=2)
            ev = evaluator(gw, data)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="outcrop.online"):
                payload = {"event": "alert.opened", "alert": {"rule": "r"}}
                assert ev.post(payload) is False
            assert why in caplog.text and f"tries: {tries}" in caplog.text
            assert "s3cr3t" not in caplog.text  # the URL's secret path is not logged
            assert ev.status()["webhook_failures"] == 1
        assert len(down.bodies) == 2 and len(refusing.bodies) == 1  # 4xx: not retried

        # Inside the evaluator: the alert is stored all the same, and scoring goes on.
        data = monitor(metrics=["tokens"])
        data["alerts"] = [{"metric": "tokens", "above": 0, "window": 1, "min_count": 1}]
        data.update(webhook_url=down.url, webhook_retries=0)
        with evaluator(gw, data) as ev:
            gw.chat("one")
            assert ev.drain()
            gw.chat("two")
            assert ev.drain()
            assert ev.status()["scored"] == 2 and ev.status()["webhook_failures"] == 1
        assert len(store.alerts(open_only=True)) == 1
    finally:
        down.close()
        refusing.close()


# -- configuration ----------------------------------------------------------------------

GOOD = """default_model = "app:chat"

[monitor]
webhook_url = "https://hooks.example.com/outcrop"

[monitor.online_eval]
sample_rate = 0.1
metrics = ["answer_relevance", "latency_ms"]

[[monitor.alerts]]
metric = "answer_relevance"
below = 0.6

[[monitor.alerts]]
metric = "latency_ms"
above = 2000
window_minutes = 15
"""

BAD = [
    # (replace this, with that, the line the error names, what it says)
    ("sample_rate = 0.1", "sample_rate = 1.5", 7, "sample_rate: Input should be less than"),
    ("sample_rate = 0.1", "sample_rat = 0.1", 7, "sample_rat: unknown setting (settings here:"),
    (
        '"latency_ms"]',
        '"latency_ms", "exact_match"]',
        8,
        "metrics[2]: exact_match needs an expected answer, which live traffic does not have",
    ),
    (
        '"latency_ms"]',
        '"relevance"]',
        8,
        "unknown metric 'relevance'. Did you mean 'answer_relevance'? Metrics that can score "
        "live traffic: answer_relevance, cost, judge",
    ),
    ('"latency_ms"]', '{name = "judge"}]', 8, "metric judge needs a rubric"),
    ('"latency_ms"]', '"faithfulness"]', 8, "needs the passages an answer was based on"),
    ('"latency_ms"]', '"latency_ms", "latency_ms"]', 8, "'latency_ms' is listed twice"),
    ("below = 0.6", "below = 3.5", 12, "scores run from 0 to 1 (a judge's 4"),
    ("below = 0.6", "below = 0.6\nabove = 0.9", 10, "alerts[0]: give one of below or above"),
    ('metric = "latency_ms"', 'metric = "latency"', 15, "Did you mean 'latency_ms'?"),
    ("window_minutes = 15", "window_minutes = 15\nwindow = 5", 14, "not both"),
    ("window_minutes = 15", "window = 5\nmin_count = 9", 14, "min_count (9) is more than"),
    ("above = 2000", 'above = "slow"', 16, "alerts[1].above: Input should be a valid number"),
    ("https://hooks", "ftp://hooks", 4, "webhook_url: give an http:// or https:// URL"),
    ("[monitor.online_eval]", "[monitor.online_evals]", 6, "monitor.online_evals: unknown"),
    ("sample_rate = 0.1", 'sample_rate = 0.1\nprompts = ["faq@latest"]', 8, "name@version"),
]


@pytest.mark.parametrize(("old", "new", "line", "says"), BAD)
def test_a_bad_setting_names_the_file_the_line_and_the_fix(
    tmp_path: Path, old: str, new: str, line: int, says: str
) -> None:
    assert old in GOOD
    path = tmp_path / "outcrop.toml"
    text = GOOD.replace(old, new, 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.path == path and caught.value.line == line, (str(caught.value), text)
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: monitor")


def test_good_settings_load_and_alerts_need_online_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "outcrop.toml"
    path.write_text(GOOD)
    settings = parse_monitor(load_settings(path).monitor)
    assert settings.online_eval is not None and settings.online_eval.sample_rate == 0.1
    assert [r.window for r in settings.alerts] == [50, None]  # a count of 50 unless told
    assert settings.alerts[1].key == "mean(latency_ms) > 2000 over the last 15 minutes"

    path.write_text("[[monitor.alerts]]\nmetric = 'judge'\nbelow = 0.5\n")
    with pytest.raises(ConfigError, match=r":1: monitor.alerts\[0\]: alert rules score nothing"):
        load_settings(path)


def test_a_judge_model_that_does_not_exist_stops_the_server_from_starting(
    store: Store, app_model: TestModel, judge: Judge
) -> None:
    gateway = Gateway(
        settings=Settings(default_model="app:chat", monitor=monitor(judge_model="jugde:strict")),
        store=store,
        providers={"app": app_model, "judge": judge},
    )
    with pytest.raises(ConfigError) as caught:
        create_app(gateway)
    assert str(caught.value).startswith("monitor.online_eval.judge_model: Unknown model")
    assert "'jugde:strict'" in str(caught.value)

    path = Path("outcrop.toml")
    path.write_text(
        '[monitor.online_eval]\nsample_rate = 1\nmetrics = ["answer_relevance"]\n'
        'judge_model = "jugde:strict"\n'
    )
    gateway.settings = load_settings(path)
    with pytest.raises(ConfigError, match=r"outcrop.toml:4: monitor.online_eval.judge_model"):
        OnlineEvaluator.from_gateway(gateway)


def test_the_metrics_named_live_are_the_ones_that_need_no_case() -> None:
    settings = {"regex": {"pattern": "x"}, "json_schema": {"schema": {"type": "object"}}}
    settings["judge"] = {"rubric": "good"}
    for name in METRICS:
        spec = MetricSpec(name=name, **settings.get(name, {}))
        metric = build_metric(spec)
        live = metric.needs is None and name != "faithfulness"
        assert live == (name in LIVE_METRICS), name
    with pytest.raises(InvalidRequestError):
        build_metric(MetricSpec(name="judge"))


def test_the_guide_example_configures_a_working_evaluator(
    tmp_path: Path, store: Store, app_model: TestModel, judge: Judge
) -> None:
    text = (DOCS / "monitor.md").read_text(encoding="utf-8")
    section = text.split("## Online evaluation and alerts", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    path = tmp_path / "outcrop.toml"
    path.write_text(blocks[0])
    settings = load_settings(path)
    gateway = Gateway(settings=settings, store=store, providers={"app": app_model})
    ev = OnlineEvaluator.from_gateway(gateway)
    assert ev is not None and ev.settings.alerts and ev.settings.webhook_url
    assert ev.config.sample_rate == 0.1


# -- the server -------------------------------------------------------------------------


@pytest.fixture
def served(gw: Gateway, judge: Judge) -> Iterator[tuple[LiveServer, OnlineEvaluator]]:
    data = monitor(metrics=["answer_relevance", "latency_ms"])
    data["alerts"] = [{"metric": "answer_relevance", "below": 0.5, "window": 5, "min_count": 2}]
    gw.settings.monitor = data
    app = create_app(gw)
    server = LiveServer(app).start()
    yield server, app.state.online
    server.stop()


def _chat(url: str, text: str, secret: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "app:chat", "messages": [{"role": "user", "content": text}]},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_the_server_scores_live_calls_and_serves_scores_and_alerts(
    served: tuple[LiveServer, OnlineEvaluator], judge: Judge, store: Store
) -> None:
    live, ev = served
    judge.score = 2  # 0.25: below the rule's 0.5
    for n in range(3):
        _chat(live.url, f"question {n}")
    assert ev.drain()
    body = httpx.get(live.url + "/v1/monitor/online?bucket=3600").json()
    assert [m["metric"] for m in body["metrics"]] == ["answer_relevance", "latency_ms"]
    relevance, latency = body["metrics"]
    assert relevance["count"] == 3 and relevance["mean"] == 0.25
    assert relevance["kind"] == "answer_relevance" and relevance["higher_is_better"] is True
    assert latency["higher_is_better"] is False
    assert len(relevance["buckets"]) == 24 and sum(b["count"] for b in relevance["buckets"]) == 3
    assert relevance["buckets"][-1]["mean"] == 0.25
    assert body["status"]["enabled"] is True and body["status"]["scored"] == 3
    other = httpx.get(live.url + "/v1/monitor/online?model=other:model").json()
    assert [m["count"] for m in other["metrics"]] == [0, 0]

    alerts = httpx.get(live.url + "/v1/alerts?open=true").json()["data"]
    assert len(alerts) == 1 and alerts[0]["open"] is True and alerts[0]["value"] == 0.25
    assert alerts[0]["rule"] == "mean(answer_relevance) < 0.5 over the last 5 scores"

    # Bad input: a 400 that says what is wrong; nothing stored changes.
    now = time.time()
    for query, says in (
        (f"since={now}&until={now - 60}", "since must be before until"),
        ("since=0", "at most a year (8760 h) apart"),
        ("since=nan", "since is a time in seconds since the epoch"),
        ("until=inf", "until is a time in seconds since the epoch"),
        ("bucket=5", "bucket must be at least 60 seconds"),
        (f"since={now - 7 * 86400}&until={now}&bucket=60", "more than 1000"),
        ("bucket=hourly", "bucket"),
    ):
        r = httpx.get(live.url + f"/v1/monitor/online?{query}")
        assert r.status_code == 400 and says in r.json()["error"]["message"], (query, r.text)
    for query in ("open=maybe", "limit=0", "limit=5000"):
        r = httpx.get(live.url + f"/v1/alerts?{query}")
        assert r.status_code == 400, (query, r.text)
    assert len(store.alerts()) == 1 and len(scores(store)) == 6

    # The API documents both routes.
    paths = httpx.get(live.url + "/openapi.json").json()["paths"]
    assert "/v1/monitor/online" in paths and "/v1/alerts" in paths


def test_a_key_sees_the_scores_of_its_own_calls(
    served: tuple[LiveServer, OnlineEvaluator], store: Store
) -> None:
    live, ev = served
    _, mine = create_key(store, "mine")
    _, theirs = create_key(store, "theirs")
    _chat(live.url, "one", mine)
    _chat(live.url, "two", mine)
    assert ev.drain()
    count = lambda secret: httpx.get(  # noqa: E731
        live.url + "/v1/monitor/online", headers={"Authorization": f"Bearer {secret}"}
    ).json()["metrics"][0]["count"]
    assert count(mine) == 2 and count(theirs) == 0
    assert httpx.get(live.url + "/v1/alerts").status_code == 401


def test_a_server_without_online_evaluation_says_it_is_off(store: Store, gw: Gateway) -> None:
    app = create_app(gw)
    assert app.state.online is None
    server = LiveServer(app).start()
    try:
        body = httpx.get(server.url + "/v1/monitor/online").json()
        assert body["status"]["enabled"] is False and body["metrics"] == []
        assert httpx.get(server.url + "/v1/alerts").json() == {"object": "list", "data": []}
    finally:
        server.stop()


def test_stopping_the_server_stops_the_evaluator(
    served: tuple[LiveServer, OnlineEvaluator],
) -> None:
    live, ev = served
    _chat(live.url, "last words")
    live.stop()
    assert not any(t.is_alive() for t in ev._threads)
    assert ev.status()["scored"] == 1  # what was queued was scored before it stopped


# -- the real local model ---------------------------------------------------------------


@pytest.mark.slow
def test_the_local_model_judges_live_calls(store: Store) -> None:
    model = "local:smollm2-135m"
    gateway = Gateway(settings=Settings(default_model=model), store=store)
    data = monitor(judge_model=model, metrics=["answer_relevance", "latency_ms"])
    with evaluator(gateway, data) as ev:
        calls = [
            gateway.chat(q, max_tokens=24, temperature=0)
            for q in ("What is the capital of France?", "Name a primary colour.", "What is 2+2?")
        ]
        assert ev.drain(timeout=240)
    rows = [r for r in scores(store) if r["metric"] == "answer_relevance"]
    assert {r["trace_id"] for r in rows} == {c.id for c in calls}
    assert all(r["score"] is not None and 0.0 <= r["score"] <= 1.0 for r in rows), rows
    assert all(r["reason"] for r in rows)
    judged = [t for t in store.recent(limit=50) if t.kind == "judge"]
    assert sorted(t.parent_id or "" for t in judged) == sorted(c.id for c in calls)


# -- the Monitor page -------------------------------------------------------------------


@pytest.fixture
def live(served: tuple[LiveServer, OnlineEvaluator]) -> LiveServer:
    """The server the Playwright ``page`` fixture opens: one that runs online evaluation."""
    return served[0]


@pytest.mark.browser
def test_the_monitor_page_shows_scores_and_an_open_alert(
    page: Page,  # noqa: F811
    served: tuple[LiveServer, OnlineEvaluator],
    judge: Judge,
    store: Store,
    artifacts: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    live, ev = served
    judge.score = 2
    for n in range(3):
        _chat(live.url, f"<b>question</b> {n}")
    assert ev.drain()
    page.goto("/ui/monitor")
    panel = page.locator("#online")
    expect(panel.locator("h2")).to_have_text("Online evaluation")
    expect(page.locator("#online-status")).to_contain_text("scores 100% of chat calls")
    expect(page.locator("#online-status")).to_contain_text("3 scored")
    expect(panel.locator("figure.chart-box")).to_have_count(2)
    expect(panel.locator("svg.chart circle.dot.s1")).not_to_have_count(0)
    expect(panel.locator("[data-metric=answer_relevance] .value")).to_have_text("0.25")
    row = panel.locator("table.alerts tbody tr[data-state=open]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("mean(answer_relevance) < 0.5 over the last 5 scores")
    expect(row.locator(".badge")).to_have_text("open")
    shot(page, artifacts, "monitor-online-alert")

    # The scores recover: after a refresh the alert shows as resolved.
    judge.score = 5
    for n in range(5):
        _chat(live.url, f"better {n}")
    assert ev.drain()
    page.click("#filters button[type=submit]")
    expect(panel.locator("table.alerts tbody tr[data-state=resolved]")).to_have_count(1)
    expect(panel.locator("table.alerts tbody tr[data-state=open]")).to_have_count(0)
    shot(page, artifacts, "monitor-online-resolved")


def test_replicas_racing_to_close_an_alert_report_it_once(postgres_url: str) -> None:
    """Two replicas see the same recovery: the one whose update lands second gets None (no
    second "resolved" webhook, no overwritten closing figures)."""
    from contextlib import contextmanager

    first, second = Store(postgres_url), Store(postgres_url)
    try:
        first.open_alert(
            alert_id="a1",
            rule="judge-low",
            metric="judge",
            opened_at=1.0,
            value=2.0,
            threshold=3.5,
            detail="",
        )
        real_tx = second._tx

        @contextmanager
        def tx_where_the_other_replica_closes_first():  # type: ignore[no-untyped-def]
            with real_tx() as tx:
                real_execute = tx.execute

                def execute(sql: str, args=()):  # type: ignore[no-untyped-def]
                    if sql.startswith("UPDATE alerts"):  # after our SELECT saw it open
                        assert first.close_alert("judge-low", closed_at=5.0, value=4.0)
                    return real_execute(sql, args)

                tx.execute = execute
                yield tx

        second._tx = tx_where_the_other_replica_closes_first  # type: ignore[method-assign]
        assert second.close_alert("judge-low", closed_at=6.0, value=4.5) is None
        (row,) = first.alerts()
        assert (row["closed_at"], row["closed_value"]) == (5.0, 4.0)
    finally:
        first.close()
        second.close()
