"""The Evals page and the playground's prompt-version comparison in a real browser (Debian's
chromium driven by Playwright), against ``outcrop serve`` on loopback with test doubles and
eval runs made for real by the runner.

Screenshots go where tests/test_ui.py puts them ($OUTCROP_TEST_ARTIFACTS/ui, else tmp_path).
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from outcrop import Gateway, Settings, Store
from outcrop.prompts import Prompt, PromptRegistry
from outcrop.providers.base import ModelInfo
from outcrop.providers.testing import FunctionModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import create_key
from outcrop.types import ChatRequest

from . import test_ui
from .serving import LiveServer
from .test_evals_api import Geography, Runs, make_runs, store_prompts
from .test_ui import shot

if importlib.util.find_spec("playwright") is not None:  # else the browser fixture skips
    from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

# The browser, the page (which fails a test on any script error or refused resource) and the
# screenshot folder are tests/test_ui.py's.
browser = test_ui.browser
page = test_ui.page
artifacts = test_ui.artifacts


class Echo(FunctionModel):
    """Says back what it read last, word by word, so two prompt versions answer differently."""

    def __init__(self) -> None:
        super().__init__(self._answer)

    def _answer(self, request: ChatRequest) -> Iterable[str]:
        for piece in re.findall(r"\S+\s*", f"You asked: {request.messages[-1].text}"):
            time.sleep(0.03)
            yield piece

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="echo:m", provider="echo")]


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(
        settings=Settings(default_model="good:m"),
        store=store,
        providers={
            "good": Geography("good", True),
            "bad": Geography("bad", False),
            "echo": Echo(),
        },
        sleep=lambda s: None,
    )


@pytest.fixture
def live(gw: Gateway) -> Iterator[LiveServer]:
    server = LiveServer(create_app(gw)).start()
    yield server
    server.stop()


@pytest.fixture
def runs(gw: Gateway) -> Runs:
    # On a thread of its own: the runner starts an event loop, and Playwright's runs here.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make_runs, gw).result()


def row_of(page: Page, run_id: str) -> Any:
    return page.locator(f"table.runs tr[data-run='{run_id}']")


def watch(tab: Page) -> list[str]:
    """Script errors and refused resources (a policy violation, say) on another tab."""
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    tab.on(
        "console",
        lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    return problems


# -- the Evals page -----------------------------------------------------------------------


def test_runs_a_matrix_a_cells_cases_and_the_report(
    page: Page, live: LiveServer, runs: Runs, store: Store, artifacts: Path
) -> None:
    page.goto("/ui/playground")
    page.locator("header.top nav a", has_text="Evals").click()
    expect(page).to_have_url(re.compile(r"/ui/evals$"))
    expect(page.locator("table.runs tbody tr")).to_have_count(3)
    good = row_of(page, runs.good.id)
    expect(good).to_contain_text("capitals")
    expect(good).to_contain_text("capital@1, capital@2")
    expect(good).to_contain_text("contains 1.000")
    expect(good).to_contain_text("16/16")
    shot(page, artifacts, "evals-runs")

    # A run's matrix: a row per cell, a column per metric, coloured by value.
    good.locator("a.run-link").click()
    expect(page).to_have_url(re.compile(rf"\?run={runs.good.id}$"))
    matrix = page.locator("table.matrix")
    expect(matrix.locator("tbody tr")).to_have_count(2)
    contains = matrix.locator("tr[data-cell^='capital@2 ×'] td[data-metric='contains']")
    expect(contains).to_have_text("1.000")
    expect(contains).to_have_class(re.compile(r"heat-4"))
    expect(matrix.locator("td[data-metric='token_f1'] .pass")).to_have_count(2)
    shot(page, artifacts, "evals-matrix")
    row_of(page, runs.bad.id).locator("a.run-link").click()
    expect(contains).to_have_class(re.compile(r"heat-0"))
    expect(matrix.locator("td[data-metric='token_f1'] .fail")).to_have_count(2)

    # A cell's cases: input, output, expected, scores, and each call's trace.
    row_of(page, runs.good.id).locator("a.run-link").click()
    matrix.locator("tr[data-cell='capital@2 × good:m'] button.cell-link").click()
    cases = page.locator("table.cases tbody tr")
    expect(cases).to_have_count(8)
    peru = page.locator("table.cases tr", has_text="Name the capital city of Peru.")
    expect(peru).to_contain_text("The capital of Peru is Lima.")
    expect(peru).to_contain_text("Lima")
    expect(peru.locator("td[data-metric='contains']")).to_have_text("1.000")
    shot(page, artifacts, "evals-cases")
    link = peru.locator("a.trace-link")
    href = link.get_attribute("href")
    assert href and href.startswith("/ui/trace/")
    trace = store.get(href.rsplit("/", 1)[1])
    assert trace is not None and trace.prompt_version == 2
    page.reload()  # what is shown lives in the address
    expect(page.locator("table.cases tbody tr")).to_have_count(8)
    link.click()
    expect(page.locator(".summary")).to_contain_text("capital@2")
    page.go_back()
    expect(page.locator("table.cases tbody tr")).to_have_count(8)

    # The HTML report, in a tab of its own, with its filter working under its policy.
    with page.context.expect_page() as opened:
        page.locator("a.report-link").click()
    report = opened.value
    problems = watch(report)
    expect(report).to_have_title(re.compile(r"capitals · eval run"))
    expect(report.locator("#shown")).to_have_text("16 of 16 rows")
    report.locator("#q").fill("Lima")
    expect(report.locator("#shown")).to_have_text("2 of 16 rows")
    report.screenshot(path=artifacts / "evals-report.png", full_page=True)
    report.close()
    assert not problems, problems


def test_two_runs_compared_with_verdicts(
    page: Page, live: LiveServer, runs: Runs, artifacts: Path
) -> None:
    page.goto("/ui/evals")
    row_of(page, runs.good.id).locator("input[name=base]").check()
    row_of(page, runs.bad.id).locator("input[name=head]").check()
    page.click("#compare")
    expect(page).to_have_url(re.compile(rf"base={runs.good.id}&head={runs.bad.id}"))
    table = page.locator("table.comparison")
    expect(table.locator("tbody tr")).to_have_count(6)  # 2 cells × 3 metrics
    regressed = table.locator("tr[data-verdict='regressed']")
    expect(regressed.filter(has_text="contains")).to_have_count(2)
    expect(regressed.first.locator(".badge")).to_have_text("regressed")
    expect(page.locator(".verdicts")).to_contain_text("regressed")
    shot(page, artifacts, "evals-compare")
    # Reloaded, the comparison and the picks are still there.
    page.reload()
    expect(table.locator("tbody tr")).to_have_count(6)
    expect(row_of(page, runs.good.id).locator("input[name=base]")).to_be_checked()


def test_bad_input_on_the_evals_page_is_a_message(
    page: Page, live: LiveServer, runs: Runs, artifacts: Path
) -> None:
    page.goto("/ui/evals?run=nope")
    expect(page.locator("#run-body [role=alert]")).to_contain_text("No eval run 'nope'.")
    expect(page.locator("table.runs tbody tr")).to_have_count(3)  # the list is still there
    shot(page, artifacts, "evals-bad-run")

    typo = runs.good.id[:7] + ("0" if runs.good.id[7] != "0" else "1")
    page.goto(f"/ui/evals?run={typo}")
    expect(page.locator("#run-body [role=alert]")).to_contain_text(
        f"Did you mean {runs.good.id[:8]}?"
    )
    page.goto(f"/ui/evals?run={runs.good.id}&cell=capital@3")
    expect(page.locator("#cases-body [role=alert]")).to_contain_text("has no cell 'capital@3'")

    page.goto("/ui/evals")
    page.click("#compare")
    expect(page.locator("#comparison-body [role=alert]")).to_have_text(
        "Pick a base run in column A and a head run in column B, then compare."
    )
    row_of(page, runs.good.id).locator("input[name=base]").check()
    row_of(page, runs.good.id).locator("input[name=head]").check()
    page.click("#compare")
    expect(page.locator("#comparison-body [role=alert]")).to_contain_text(
        f"base and head are the same run ({runs.good.id[:8]})"
    )
    shot(page, artifacts, "evals-bad-same-run")
    row_of(page, runs.other.id).locator("input[name=head]").check()
    page.click("#compare")
    expect(page.locator("#comparison-body [role=alert]")).to_contain_text(
        "base is a run of suite 'capitals' and head of suite 'capitals-hard'"
    )
    shot(page, artifacts, "evals-bad-suites")


def test_with_a_key_the_report_is_downloaded(
    page: Page, live: LiveServer, runs: Runs, store: Store, tmp_path: Path
) -> None:
    _, secret = create_key(store, "ui")
    page.goto(f"/ui/evals?run={runs.good.id}")
    expect(page.locator("#runs-error [role=alert]")).to_contain_text("Missing API key")
    page.fill("#api-key", secret)
    page.click("#key-form button")
    expect(page.locator("table.matrix tbody tr")).to_have_count(2)
    expect(page.locator("a.report-link")).to_have_count(0)  # a link cannot carry the key
    with page.expect_download() as download:
        page.click("#download-report")
    saved = tmp_path / "report.html"
    download.value.save_as(saved)
    text = saved.read_text(encoding="utf-8")
    assert "<title>capitals · eval run" in text and runs.good.id[:8] in text


# -- the playground: prompt versions side by side -------------------------------------------


def test_playground_compares_two_prompt_versions_with_their_traces(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    store_prompts(store)
    page.goto("/ui/playground")
    expect(page.locator("#pv-prompt option[value=capital]")).to_have_count(1)
    page.select_option("#pv-prompt", "capital")
    picks = page.locator("#pv-picks select.pv-version")
    expect(picks).to_have_count(2)
    expect(picks.nth(0)).to_have_value("capital@1")
    expect(picks.nth(1)).to_have_value("capital@2")
    expect(page.locator("#pv-model option[value='echo:m']")).to_have_count(1)
    page.select_option("#pv-model", "echo:m")
    page.fill("#pv-var-country", "Peru")
    page.click("#pv-run")
    columns = page.locator("#pv-results .pv-column")
    expect(columns).to_have_count(2)
    first, second = columns.nth(0), columns.nth(1)
    expect(first.locator(".msg.answer")).to_have_attribute("data-state", "streaming")
    expect(first.locator(".msg.answer")).to_have_attribute("data-state", "done")
    expect(second.locator(".msg.answer")).to_have_attribute("data-state", "done")
    expect(first.locator(".pv-rendered")).to_contain_text("What is the capital of Peru?")
    expect(second.locator(".pv-rendered")).to_contain_text("You are a geography teacher.")
    expect(first.locator(".msg.answer .content")).to_have_text(
        "You asked: What is the capital of Peru?"
    )
    expect(second.locator(".msg.answer .content")).to_have_text(
        "You asked: Name the capital city of Peru."
    )
    for column in (first, second):
        expect(column.locator(".meta")).to_contain_text("out")
        expect(column.locator(".meta .cost")).to_have_text("cost $0")
        expect(column.locator(".tokens")).to_contain_text("tokens")
    shot(page, artifacts, "playground-versions")

    # Each answer links to its trace, which records the prompt version.
    ids = [c.locator(".msg.answer").get_attribute("data-trace-id") for c in (first, second)]
    rows = [store.get(i) for i in ids if i]
    assert [(r.prompt_name, r.prompt_version) for r in rows if r] == [
        ("capital", 1),
        ("capital", 2),
    ]
    second.locator("a.trace-link").click()
    expect(page.locator(".summary")).to_contain_text("capital@2")
    expect(page.locator(".response .content")).to_have_text(
        "You asked: Name the capital city of Peru."
    )

    # Three at once, one of them by label.
    page.goto("/ui/playground")
    page.select_option("#pv-prompt", "capital")
    expect(picks).to_have_count(2)
    page.click("#pv-add")
    expect(picks).to_have_count(3)
    expect(page.locator("#pv-add")).to_be_disabled()
    picks.nth(0).select_option("capital@2")
    picks.nth(1).select_option("capital@production")
    picks.nth(2).select_option("capital@1")
    page.fill("#pv-var-country", "Chad")
    page.click("#pv-run")
    expect(page.locator("#pv-status [role=alert]")).to_have_text(
        "Two of the picks are version 1 (a label points at it): pick different versions."
    )
    picks.nth(2).locator("xpath=..").locator("button.remove").click()
    page.click("#pv-run")
    expect(columns).to_have_count(2)
    expect(columns.nth(1)).to_contain_text("capital@production → version 1")
    expect(columns.nth(1).locator(".msg.answer")).to_have_attribute("data-state", "done")


def test_bad_input_in_the_prompt_versions_is_a_message(
    page: Page, live: LiveServer, store: Store, artifacts: Path
) -> None:
    page.goto("/ui/playground")
    expect(page.locator("#pv-prompt-note")).to_contain_text("No prompts yet")
    page.click("#pv-run")
    expect(page.locator("#pv-status [role=alert]")).to_have_text("Choose a stored prompt first.")

    store_prompts(store)
    page.reload()
    page.select_option("#pv-prompt", "capital")
    expect(page.locator("#pv-picks select.pv-version")).to_have_count(2)
    page.click("#pv-run")
    expect(page.locator("#pv-status [role=alert]")).to_have_text(
        'Fill in the variable "country" (capital@1 uses it).'
    )
    page.fill("#pv-var-country", "Peru")
    page.fill("#temperature", "9")
    page.click("#pv-run")
    expect(page.locator("#pv-status [role=alert]")).to_have_text(
        "Temperature must be a number at least 0 and at most 2."
    )
    shot(page, artifacts, "playground-versions-bad")
    assert store.recent(limit=5) == []  # nothing was sent

    # The server's refusal of one version (a template it cannot render) is shown in its
    # column; the other version still answers.
    page.fill("#temperature", "")
    registry = PromptRegistry(store)
    registry.record(Prompt(name="shout", query="Shout {{ text }}!"))
    registry.record(Prompt(name="shout", query="Shout {{ text + 1 }}!"))
    page.reload()
    page.select_option("#pv-prompt", "shout")
    page.select_option("#pv-model", "echo:m")
    page.fill("#pv-var-text", "hello")
    page.click("#pv-run")
    columns = page.locator("#pv-results .pv-column")
    expect(columns.nth(1).locator(".msg.answer")).to_have_attribute("data-state", "error")
    expect(columns.nth(1).locator("[role=alert]")).to_contain_text(
        "query: the template failed (TypeError"
    )
    expect(columns.nth(0).locator(".msg.answer .content")).to_have_text("You asked: Shout hello!")
    shot(page, artifacts, "playground-versions-refused")
