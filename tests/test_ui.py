"""The web UI in a real browser: Debian's chromium driven by Playwright for Python, against
``outcrop serve`` on loopback with test-double models.

Screenshots go to ``$OUTCROP_TEST_ARTIFACTS/ui`` when that is set (CI keeps them), else to
each test's tmp_path. Chromium comes from ``apt-get install chromium`` (``playwright install``
is not needed); ``OUTCROP_CHROMIUM`` points elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.errors import ProviderError
from outcrop.observe.store import TraceRow
from outcrop.providers.base import ModelInfo
from outcrop.providers.testing import FunctionModel
from outcrop.serve.app import ServeConfig, create_app
from outcrop.serve.keys import create_key
from outcrop.types import ChatRequest

from .serving import LiveServer

if importlib.util.find_spec("playwright") is not None:  # else the browser tests skip, saying why
    from playwright.sync_api import expect, sync_playwright

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("OUTCROP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _no_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the UI tests need Playwright for Python: pip install playwright"
    if not Path(CHROMIUM).exists():
        return (
            f"the UI tests need Chromium at {CHROMIUM}: apt-get install chromium "
            "(or set OUTCROP_CHROMIUM)"
        )
    return None


ALPHA = "Streaming answers arrive one word at a time so that you can watch them grow."
BETA = "Beta answers differently, and a little faster."


class Words(FunctionModel):
    """A test double under its own provider name, answering word by word with a pause."""

    def __init__(self, provider: str, text: str, pause: float):
        super().__init__(self._answer)
        self.provider = provider
        self.text = text
        self.pause = pause

    def _answer(self, request: ChatRequest) -> Iterable[str]:
        for piece in re.findall(r"\S+\s*", self.text):
            time.sleep(self.pause)
            yield piece

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"{self.provider}:words", provider=self.provider)]


class Broken(FunctionModel):
    def __init__(self) -> None:
        super().__init__(lambda request: ProviderError("upstream is down", status_code=500))

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="broken:model", provider="broken")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    why = _no_browser()
    if why is not None:
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def alpha() -> Words:
    return Words("alpha", ALPHA, pause=0.08)


@pytest.fixture
def beta() -> Words:
    return Words("beta", BETA, pause=0.03)


@pytest.fixture
def gw(store: Store, alpha: Words, beta: Words) -> Gateway:
    return Gateway(
        settings=Settings(default_model="alpha:words"),
        store=store,
        providers={"alpha": alpha, "beta": beta, "broken": Broken()},
        sleep=lambda s: None,
    )


@pytest.fixture
def live(gw: Gateway) -> Iterator[LiveServer]:
    server = LiveServer(create_app(gw, ServeConfig())).start()
    yield server
    server.stop()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("OUTCROP_TEST_ARTIFACTS")
    folder = Path(root) / "ui" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(
    browser: Browser, live: LiveServer, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A page on the live server; fails the test on a script error or a refused resource (a
    Content-Security-Policy violation, say), and keeps a screenshot of how it ended."""
    context = browser.new_context(base_url=live.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))

    def console(message: Any) -> None:
        # Chromium logs every non-2xx fetch as "Failed to load resource"; those are expected
        # where a test sends bad input on purpose. Anything else logged as an error is not.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    tab.on("console", console)
    yield tab
    tab.screenshot(path=artifacts / f"{request.node.name}-end.png", full_page=True)
    context.close()
    assert not problems, problems


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=artifacts / f"{name}.png", full_page=True)


def answers(page: Page, column: int = 0) -> Any:
    return page.locator(".column").nth(column).locator(".msg.answer")


def wait_models(page: Page, model: str = "alpha:words") -> None:
    """Wait for the model list, and pick a test double in the first column."""
    first = page.locator(".column select.model").first
    expect(first.locator(f"option[value='{model}']")).to_have_count(1)
    first.select_option(model)


# -- without a browser: what the server sends ----------------------------------------------


def test_pages_are_served_with_a_strict_content_policy(live: LiveServer) -> None:
    home = httpx.get(live.url + "/", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (307, "/ui/playground")
    for path in ["/ui/playground", "/ui/monitor", "/ui/trace/abc%20def"]:
        page = httpx.get(live.url + path)
        assert page.status_code == 200, path
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(live.url + "/ui/static/playground.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert httpx.get(live.url + "/ui/static/ui.css").headers["content-type"].startswith("text/css")


def test_unknown_files_and_pages_are_404s_that_say_so(live: LiveServer) -> None:
    for path in ["/ui/static/nope.js", "/ui/static/..%2Fui.py", "/ui/static/%2E%2E/app.py"]:
        missing = httpx.get(live.url + path)
        assert missing.status_code == 404, path
        assert missing.text.startswith("No such file"), path
    page = httpx.get(live.url + "/ui/elsewhere")
    assert page.status_code == 404 and "There is no such page" in page.text
    assert page.headers["content-type"].startswith("text/html")
    # The UI is not part of the API's document.
    paths = httpx.get(live.url + "/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


def test_pages_load_nothing_from_elsewhere() -> None:
    """Every file a page names exists in the package, and none comes from another host."""
    from outcrop.serve.ui import _FILES

    texts = {name: entry.read_text(encoding="utf-8") for name, entry in _FILES.items()}
    named: set[str] = set()
    for name, text in texts.items():
        named |= set(re.findall(r'(?:src|href)="/ui/static/([^"]+)"', text))
        named |= {m for m in re.findall(r'from "\./([^"]+)"', text)}
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    assert named and named <= set(texts), named - set(texts)
    assert {"playground.html", "monitor.html", "trace.html", "404.html"} <= set(texts)


# -- in the browser ---------------------------------------------------------------------


@pytest.mark.browser
def test_chat_streams_token_by_token_and_opens_its_trace(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/ui/playground$"))
    wait_models(page)
    # Record the answer's length at every change of the page, as a person watching would.
    page.evaluate(
        """() => {
            window.lengths = [];
            new MutationObserver(() => {
                const c = document.querySelector('.msg.answer .content');
                if (c) window.lengths.push(c.textContent.length);
            }).observe(document.getElementById('columns'),
                       {childList: true, subtree: true, characterData: true});
        }"""
    )
    page.fill("#message", "Hello <b>there</b>")
    page.press("#message", "Enter")
    answer = answers(page).first
    expect(answer).to_have_attribute("data-state", "streaming")
    expect(answer.locator(".content")).to_contain_text("Streaming answers")
    shot(page, artifacts, "chat-streaming")
    expect(answer).to_have_attribute("data-state", "done")
    assert answer.locator(".content").text_content() == ALPHA
    lengths = [n for n in page.evaluate("window.lengths") if n]
    assert len(set(lengths)) >= 8, lengths  # 15 words arrived as more than a handful of updates
    assert lengths == sorted(lengths)
    # The user's text is shown as text, not markup.
    expect(page.locator(".msg.user .content").first).to_have_text("Hello <b>there</b>")
    expect(answer.locator(".meta")).to_contain_text("out")
    shot(page, artifacts, "chat-done")

    (row,) = store.recent(limit=5)
    link = answer.locator("a.trace-link")
    expect(link).to_have_attribute("href", f"/ui/trace/{row.id}")
    link.click()
    expect(page).to_have_url(re.compile(rf"/ui/trace/{row.id}$"))
    expect(page.locator(".trace-head")).to_contain_text(row.id)
    expect(page.locator(".messages .msg.user .content")).to_have_text("Hello <b>there</b>")
    expect(page.locator(".response .content")).to_have_text(ALPHA)
    expect(page.locator(".timings")).to_contain_text("Time to first token")
    expect(page.locator(".summary")).to_contain_text("alpha:words")
    expect(page.locator(".trace-head .badge")).to_have_text("ok")
    shot(page, artifacts, "trace")


@pytest.mark.browser
def test_stop_ends_the_stream_and_the_call_is_recorded_cancelled(
    page: Page, live: LiveServer, store: Store, alpha: Words, artifacts: Path
) -> None:
    alpha.pause = 0.25
    page.goto("/ui/playground")
    wait_models(page)
    page.fill("#message", "Go on")
    page.press("#message", "Enter")
    answer = answers(page).first
    expect(answer.locator(".content")).to_contain_text("arrive")
    expect(page.locator("#send")).to_be_disabled()
    page.click("#stop")
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(page.locator("#send")).to_be_enabled()
    partial = answer.locator(".content").text_content()
    assert partial and partial != ALPHA and ALPHA.startswith(partial)
    deadline = time.time() + 10
    while not (rows := store.recent(limit=1)) and time.time() < deadline:
        time.sleep(0.05)
    assert [r.status for r in rows] == ["cancelled"]
    shot(page, artifacts, "stopped")


@pytest.mark.browser
def test_feedback_from_the_playground_and_the_trace_page(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    page.goto("/ui/playground")
    wait_models(page)
    page.fill("#message", "Rate me")
    page.click("#send")
    answer = answers(page).first
    expect(answer).to_have_attribute("data-state", "done")
    trace_id = answer.get_attribute("data-trace-id")
    assert trace_id
    answer.locator(".comment").fill("too long-winded")
    answer.locator("button.thumb.down").click()
    expect(answer.locator(".feedback .status")).to_have_text("Feedback saved.")
    expect(answer.locator("button.thumb.down")).to_have_attribute("aria-pressed", "true")
    assert store.feedback([trace_id]) == {
        trace_id: {"rating": "down", "comment": "too long-winded"}
    }
    shot(page, artifacts, "feedback-playground")

    # The trace page shows it, and changes it.
    page.goto(f"/ui/trace/{trace_id}")
    form = page.locator(".feedback-box .feedback")
    expect(form.locator("button.thumb.down")).to_have_attribute("aria-pressed", "true")
    expect(form.locator(".comment")).to_have_value("too long-winded")
    form.locator(".comment").fill("fine after all")
    form.locator("button.thumb.up").click()
    expect(form.locator(".status")).to_have_text("Feedback saved.")
    assert store.feedback([trace_id])[trace_id] == {"rating": "up", "comment": "fine after all"}
    body = httpx.get(f"{live.url}/v1/traces/{trace_id}").json()
    assert body["feedback"] == {"rating": "up", "comment": "fine after all"}


@pytest.mark.browser
def test_prompt_builder_renders_live_and_sends(
    page: Page, live: LiveServer, alpha: Words, artifacts: Path
) -> None:
    page.goto("/ui/playground")
    wait_models(page)
    expect(page.locator("#p-status")).to_have_text("Write a query to see the rendered prompt.")
    page.fill("#p-query", "What is {{ topic }}?")
    page.fill("#p-persona", "a patient physics teacher")
    page.fill("#p-objective", "a student understands the idea")
    page.fill("#p-constraints", "Two sentences at most.\nNo equations.")
    page.fill("#p-tone", "warm")
    page.click("#p-add-example")
    page.locator(".example .ex-input").fill("What is mass?")
    page.locator(".example .ex-output").fill("How much stuff there is.")
    page.fill("#p-context", "Our class reads chapter 4.")
    page.fill("#p-variables", "topic=entropy")
    rendered = page.locator("#p-rendered")
    expect(rendered).to_contain_text("You are a patient physics teacher.")
    expect(rendered).to_contain_text("- No equations.")
    expect(rendered).to_contain_text("Question: What is entropy?")
    # The count shown is the server's count for the same prompt and model.
    expected = httpx.post(
        f"{live.url}/v1/prompts/render",
        json={
            "prompt": {
                "query": "What is {{ topic }}?",
                "persona": "a patient physics teacher",
                "objective": "a student understands the idea",
                "constraints": ["Two sentences at most.", "No equations."],
                "tone": "warm",
                "examples": [{"input": "What is mass?", "output": "How much stuff there is."}],
                "context": "Our class reads chapter 4.",
            },
            "variables": {"topic": "entropy"},
            "model": "alpha:words",
        },
    ).json()["tokens"]
    expect(page.locator("#p-tokens")).to_have_attribute("data-tokens", str(expected))
    expect(page.locator("#p-tokens")).to_contain_text(f"{expected} tokens")
    shot(page, artifacts, "prompt-builder")

    # A typo in a variable: the server's message, in the page; the last rendering dimmed.
    page.fill("#p-variables", "topik=entropy")
    expect(page.locator("#p-status")).to_contain_text("Did you mean 'topic'")
    expect(rendered).to_have_class(re.compile("stale"))
    shot(page, artifacts, "prompt-builder-error")
    page.fill("#p-variables", "topic=entropy")
    expect(page.locator("#p-status")).to_have_text("")

    page.click("#p-send")
    answer = answers(page).first
    expect(answer).to_have_attribute("data-state", "done")
    sent = alpha.requests[-1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert "You are a patient physics teacher." in sent[0].text
    assert sent[-1].text == "Context:\nOur class reads chapter 4.\n\nQuestion: What is entropy?"
    expect(page.locator(".column .msg.system")).to_contain_text("patient physics teacher")


@pytest.mark.browser
def test_compare_two_models_side_by_side(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    page.goto("/ui/playground")
    wait_models(page)
    page.click("#add-column")
    page.locator(".column select.model").nth(1).select_option("beta:words")
    page.click("#add-column")
    expect(page.locator(".column")).to_have_count(3)
    expect(page.locator("#add-column")).to_be_disabled()
    page.locator(".column").nth(2).locator("button.remove").click()
    expect(page.locator(".column")).to_have_count(2)
    page.fill("#message", "Which of you is faster?")
    page.press("#message", "Enter")
    a, b = answers(page, 0).first, answers(page, 1).first
    # Both stream at once: each is still streaming while the other has started.
    expect(a.locator(".content")).not_to_be_empty()
    expect(b.locator(".content")).not_to_be_empty()
    expect(a).to_have_attribute("data-state", "streaming")
    expect(a).to_have_attribute("data-state", "done")
    expect(b).to_have_attribute("data-state", "done")
    assert a.locator(".content").text_content() == ALPHA
    assert b.locator(".content").text_content() == BETA
    ids = {a.get_attribute("data-trace-id"), b.get_attribute("data-trace-id")}
    rows = {r.id: r for r in store.recent(limit=10)}
    assert ids == set(rows)
    assert {rows[i].model for i in ids} == {"alpha:words", "beta:words"}
    shot(page, artifacts, "compare")

    # A follow-up goes to each model with its own history.
    page.fill("#message", "And now?")
    page.press("#message", "Enter")
    expect(answers(page, 1).nth(1)).to_have_attribute("data-state", "done")
    expect(answers(page, 0).nth(1)).to_have_attribute("data-state", "done")
    latest = {r.model: r for r in store.recent(limit=2)}
    assert [m["content"][0]["text"] for m in latest["beta:words"].request["messages"]] == [
        "Which of you is faster?",
        BETA,
        "And now?",
    ]


@pytest.mark.browser
def test_monitor_charts_filters_and_trace_list(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    for model in ["alpha:words", "alpha:words", "beta:words", "broken:model"]:
        httpx.post(
            f"{live.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    page.goto("/ui/monitor")
    totals = page.locator("#totals")
    expect(totals.locator("[data-metric=requests] .value")).to_have_text("4")
    expect(totals.locator("[data-metric=errors] .value")).to_have_text("1")
    expect(totals.locator("[data-metric='latency p95'] .value")).to_have_text(re.compile(r"\d"))
    expect(page.locator("figure.chart-box")).to_have_count(4)
    expect(page.locator("svg.chart rect.bar.s1")).not_to_have_count(0)
    expect(page.locator("svg.chart rect.bar.bad")).to_have_count(1)
    expect(page.locator("table.traces tbody tr")).to_have_count(4)
    shot(page, artifacts, "monitor")

    page.locator("#model").select_option("beta:words")
    expect(totals.locator("[data-metric=requests] .value")).to_have_text("1")
    expect(page.locator("table.traces tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"model=beta%3Awords"))
    page.reload()  # the filters are in the address
    expect(page.locator("#model")).to_have_value("beta:words")
    expect(page.locator("table.traces tbody tr")).to_have_count(1)
    (beta_row,) = [r for r in store.recent(limit=10) if r.model == "beta:words"]
    page.locator("table.traces tbody tr a").click()
    expect(page).to_have_url(re.compile(rf"/ui/trace/{beta_row.id}$"))
    expect(page.locator(".response .content")).to_have_text(BETA)


@pytest.mark.browser
def test_trace_page_shows_tools_chunks_guardrails_attempts_and_children(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    now = time.time()
    hostile = '<img src=x onerror="window.pwned=1">'
    store.record(
        TraceRow(
            id="parent-1",
            started_at=now,
            requested_model="fast",
            model="alpha:words",
            provider="alpha",
            stream=True,
            status="ok",
            finish_reason="stop",
            input_tokens=120,
            output_tokens=30,
            latency_ms=900.0,
            ttft_ms=150.0,
            cost_usd=0.00042,
            prompt_name="kb:docs",
            attempts=[
                {"model": "beta:words", "error": "rate limited", "status_code": 429},
                {"model": "alpha:words", "error": None, "status_code": None},
            ],
            request={
                "model": "fast",
                "temperature": 0.2,
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": "Cite sources."}]},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": 'Context:\n<source n="1" source="hours.md">\nOpen at 9.'
                                '\n</source>\n\n<source n="2" source="&quot;x&quot;.md">\n'
                                f"{hostile}\n</source>\n\nQuestion: When?",
                            }
                        ],
                    },
                    {
                        "role": "assistant",
                        "content": [],
                        "tool_calls": [{"id": "c1", "name": "clock", "arguments": {"tz": "UTC"}}],
                    },
                    {
                        "role": "tool",
                        "tool_call_id": "c1",
                        "content": [{"type": "text", "text": "08:59"}],
                    },
                ],
            },
            response=f"At 9 [1]. {hostile}",
            guardrails=[
                {
                    "point": "retrieved",
                    "check": "injection",
                    "action": "flag",
                    "matched": "ignore previous",
                    "score": 0.91,
                    "source": "x.md",
                },
                {"point": "output", "check": "pii", "action": "mask", "matched": "email"},
            ],
        )
    )
    store.record(
        TraceRow(
            id="child-1",
            parent_id="parent-1",
            kind="tool",
            started_at=now,
            requested_model="lookup",
            model="tool:lookup",
            stream=False,
            status="ok",
            latency_ms=12.0,
            request={"tool": "lookup", "arguments": {"q": "hours"}},
            response="9 to 17",
        )
    )
    page.goto("/ui/trace/parent-1")
    expect(page.locator(".summary")).to_contain_text("fast → alpha:words")
    expect(page.locator(".summary")).to_contain_text("kb:docs")
    expect(page.locator(".timings")).to_contain_text("150 ms")
    expect(page.locator(".timings")).to_contain_text("$0.00042")
    expect(page.locator(".messages .msg")).to_have_count(4)
    expect(page.locator(".options pre")).to_contain_text('"temperature": 0.2')
    tools = page.locator(".tools tbody tr")
    expect(tools).to_have_count(2)
    expect(tools.nth(0)).to_contain_text("clock")
    expect(tools.nth(0)).to_contain_text("08:59")
    expect(tools.nth(1)).to_contain_text("lookup")
    expect(tools.nth(1)).to_contain_text("9 to 17")
    chunks = page.locator(".chunks .chunk")
    expect(chunks).to_have_count(2)
    expect(chunks.nth(0)).to_contain_text("hours.md")
    expect(chunks.nth(1)).to_contain_text('"x".md')
    expect(page.locator(".guardrails tbody tr")).to_have_count(2)
    expect(page.locator(".guardrails")).to_contain_text("injection")
    expect(page.locator(".attempts tbody tr")).to_have_count(2)
    expect(page.locator(".attempts")).to_contain_text("rate limited")
    expect(page.locator(".children a")).to_have_text("child-1")
    # Model output and retrieved text are shown as text: nothing in them runs.
    expect(page.locator(".response .content")).to_have_text(f"At 9 [1]. {hostile}")
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None
    shot(page, artifacts, "trace-rich")

    page.locator(".children a").click()
    expect(page.locator(".summary")).to_contain_text("parent-1")


@pytest.mark.browser
def test_bad_input_is_a_message_in_the_page(
    page: Page, live: LiveServer, alpha: Words, artifacts: Path
) -> None:
    # An unknown trace.
    page.goto("/ui/trace/no-such-trace")
    expect(page.locator("[role=alert]")).to_have_text("No trace 'no-such-trace'.")
    shot(page, artifacts, "bad-trace")

    # A dashboard query with a bad range; the page keeps its filters and list.
    page.goto("/ui/monitor")
    page.fill("#hours", "0")
    page.click("#filters button[type=submit]")
    error = page.locator("#summary-error [role=alert]")
    expect(error).to_contain_text("hours must be above 0 and at most 8760")
    expect(page.locator("#filters")).to_be_visible()
    shot(page, artifacts, "bad-range")
    page.goto("/ui/monitor?hours=24&bucket=30")
    expect(error).to_contain_text("bucket must be at least 60 seconds")
    page.fill("#hours", "24")
    page.select_option("#bucket", "3600")
    expect(error).to_have_count(0)

    # A failed chat, and a bad parameter.
    page.goto("/ui/playground")
    wait_models(page, "broken:model")
    page.fill("#message", "Anyone there?")
    page.press("#message", "Enter")
    failed = answers(page).first
    expect(failed).to_have_attribute("data-state", "error")
    expect(failed.locator("[role=alert]")).to_contain_text("Error 502")
    expect(failed.locator("[role=alert]")).to_contain_text("upstream is down")
    page.fill("#temperature", "7")
    page.fill("#message", "again")
    page.press("#message", "Enter")
    expect(page.locator("#banner [role=alert]")).to_have_text(
        "Temperature must be a number at least 0 and at most 2."
    )
    expect(page.locator("#message")).to_have_value("again")  # kept, to send once fixed
    shot(page, artifacts, "bad-chat")
    # Fixed: sent, without the turn that failed.
    page.fill("#temperature", "0.5")
    page.locator(".column select.model").first.select_option("alpha:words")
    page.press("#message", "Enter")
    expect(answers(page).nth(1)).to_have_attribute("data-state", "done")
    expect(page.locator("#banner")).to_be_empty()
    sent = alpha.requests[-1]
    assert [m.text for m in sent.messages] == ["again"] and sent.temperature == 0.5

    # An unknown page.
    page.goto("/ui/nowhere")
    expect(page.locator("[role=alert]")).to_contain_text("There is no such page")


@pytest.mark.browser
def test_keys_the_pasted_key_is_sent_and_feedback_on_an_unseen_trace_fails(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    mine, secret = create_key(store, "ui")
    _, other = create_key(store, "other")
    page.goto("/ui/playground")
    expect(page.locator("#banner [role=alert]")).to_contain_text("Missing API key")
    page.fill("#api-key", secret)
    page.click("#key-form button")
    wait_models(page)
    expect(page.locator("#banner")).to_be_empty()
    page.fill("#message", "with a key")
    page.press("#message", "Enter")
    answer = answers(page).first
    expect(answer).to_have_attribute("data-state", "done")
    trace_id = answer.get_attribute("data-trace-id")
    assert trace_id
    row = store.get(trace_id)
    assert row is not None and row.api_key == mine.id

    # Another key does not see this trace: feedback with it is refused, and says why.
    page.fill("#api-key", other)
    page.click("#key-form button")
    answer.locator("button.thumb.up").click()
    expect(answer.locator(".feedback .status")).to_have_text(
        f"Feedback not saved: No trace '{trace_id}'."
    )
    assert store.feedback([trace_id]) == {}
    shot(page, artifacts, "feedback-refused")

    # The key is kept in the browser across pages.
    page.goto(f"/ui/trace/{trace_id}")
    expect(page.locator("[role=alert]")).to_have_text(f"No trace '{trace_id}'.")
    page.fill("#api-key", secret)
    page.click("#key-form button")
    expect(page.locator(".response .content")).to_have_text(ALPHA)
