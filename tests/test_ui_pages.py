"""The Knowledge and Models pages in headless Chromium (Playwright), against ``outcrop serve``
on loopback: knowledge bases on the real MiniLM embedder with a test double writing answers,
and the real catalog. Screenshots go where tests/test_ui.py puts them."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2 as httpx
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.catalog.models import catalog, filter_models, find, recommend
from outcrop.catalog.sizing import size
from outcrop.cli.models import _gib
from outcrop.providers.testing import FunctionModel
from outcrop.serve.app import ServeConfig, create_app
from outcrop.serve.keys import create_key
from outcrop.types import ChatRequest

from . import test_ui
from .serving import LiveServer
from .test_rag_loaders import make_pdf
from .test_ui import shot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

with contextlib.suppress(ImportError):  # without Playwright the browser fixture skips
    from playwright.sync_api import expect

# The browser, the page (failing on script errors, with a screenshot) and where screenshots
# go: the same as the other UI tests.
browser = test_ui.browser
page = test_ui.page
artifacts = test_ui.artifacts

PASSWORDS = (
    "# Accounts\n\n## Resetting a password\n\nTo reset your password, open Settings, choose "
    "Security and click Reset password. The reset link expires after 30 minutes.\n"
)
ANSWER = "The reset link expires after 30 minutes [1]."
BODY_LIMIT = 128 * 1024


def reply(request: ChatRequest) -> str:
    return ANSWER


@pytest.fixture
def gw(store: Store) -> Gateway:
    # The real local embedder; a test double writes the answers.
    return Gateway(
        settings=Settings(default_model="fn:answer"),
        store=store,
        providers={"fn": FunctionModel(reply)},
        sleep=lambda s: None,
    )


@pytest.fixture
def live(gw: Gateway) -> Iterator[LiveServer]:
    server = LiveServer(create_app(gw, ServeConfig(max_body_bytes=BODY_LIMIT))).start()
    yield server
    server.stop()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "passwords.md").write_text(PASSWORDS)
    pages = ["Orders ship within 2 working days.", "Delivery in the EU takes 3 to 5 days."]
    (folder / "guide.pdf").write_bytes(make_pdf(pages, "Shipping guide"))
    return folder


def drop(page: Page, files: dict[str, bytes]) -> None:
    """Drop files on the drop zone, as dragging them from the desktop does."""
    encoded = [[name, base64.b64encode(data).decode()] for name, data in files.items()]
    page.evaluate(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, data] of files) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name));
            }
            const zone = document.getElementById("drop");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true,
                                                           cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true,
                                                       cancelable: true}));
        }""",
        encoded,
    )


# -- without a browser ------------------------------------------------------------------


def test_the_pages_are_served_and_in_the_nav(live: LiveServer) -> None:
    for path in ["/ui/knowledge", "/ui/models"]:
        response = httpx.get(live.url + path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["content-type"] == "text/html; charset=utf-8"
    common = httpx.get(live.url + "/ui/static/common.js").text
    assert '["knowledge", "Knowledge", "/ui/knowledge"]' in common
    assert '["models", "Models", "/ui/models"]' in common


# -- Knowledge ----------------------------------------------------------------------------


@pytest.mark.browser
def test_create_upload_ask_with_citations_and_search(
    page: Page, live: LiveServer, docs: Path, artifacts: Path
) -> None:
    page.goto("/ui/knowledge")
    expect(page.locator("#kb-list")).to_contain_text("No knowledge bases yet.")
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Knowledge")
    page.fill("#new-name", "handbook")
    page.click("#create")
    expect(page).to_have_url(re.compile(r"/ui/knowledge\?kb=handbook$"))
    expect(page.locator("#kb-title")).to_have_text("handbook")
    expect(page.locator("#documents")).to_contain_text("No documents yet")

    page.set_input_files("#files", [docs / "passwords.md", docs / "guide.pdf"])
    results = page.locator("table.uploads tbody tr")
    expect(results).to_have_count(2)
    for name in ["passwords.md", "guide.pdf"]:
        expect(page.locator(f"tr[data-file='{name}'] .badge")).to_have_text("added")
    expect(page.locator(".upload-summary")).to_contain_text("2 added")
    rows = page.locator("#documents tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Shipping guide")
    expect(page.locator("#kb-stats")).to_contain_text("2 documents")
    expect(page.locator(".kb-list li[data-kb=handbook]")).to_contain_text("2 documents")
    shot(page, artifacts, "knowledge-uploaded")

    # Ask: the answer's [1] opens the passage it cites, with where it is and its score.
    page.fill("#question", "When does the reset link expire?")
    page.press("#question", "Enter")
    answer = page.locator(".kb-answer")
    expect(answer.locator(".answer-text")).to_have_text(ANSWER)
    cite = answer.locator(".answer-text button.cite")
    expect(cite).to_have_text("[1]")
    passage = page.locator("#cite-1")
    expect(passage).not_to_have_attribute("open", "")
    cite.click()
    expect(passage).to_have_attribute("open", "")
    expect(passage.locator("summary")).to_contain_text("[1] passwords.md")
    expect(passage.locator("summary")).to_contain_text(re.compile(r"characters \d+–\d+ · score"))
    expect(passage.locator(".passage")).to_contain_text("The reset link expires after 30 minutes.")
    expect(answer.locator("a.trace-link")).to_have_attribute("href", re.compile(r"^/ui/trace/"))
    shot(page, artifacts, "knowledge-answer")

    # Search: every result with the score of each stage.
    page.fill("#query", "how many days does delivery take")
    page.click("#search")
    first = page.locator("#results .hit").first
    expect(first).to_have_attribute("data-source", "guide.pdf")
    for stage in ["dense", "bm25", "hybrid"]:
        expect(first.locator(f".stage[data-stage={stage}]")).to_contain_text(stage)
    expect(first.locator(".passage")).to_contain_text("Delivery in the EU")
    page.select_option("#mode", "bm25")
    page.click("#search")
    expect(page.locator("#results .hit").first.locator(".stage")).to_have_count(1)
    shot(page, artifacts, "knowledge-search")

    # Remove a document: a second click confirms.
    remove = page.locator("tr[data-source='passwords.md'] button.remove-doc")
    remove.click()
    expect(remove).to_have_text("Click again to remove")
    remove.click()
    expect(rows).to_have_count(1)
    expect(page.locator("#kb-stats")).to_contain_text("1 document ·")


@pytest.mark.browser
def test_bad_files_and_bad_input_are_messages_in_the_page(
    page: Page, live: LiveServer, docs: Path, artifacts: Path
) -> None:
    page.goto("/ui/knowledge")
    page.fill("#new-name", "Team Docs")
    page.click("#create")
    expect(page.locator("#create-status [role=alert]")).to_contain_text(
        "'Team Docs' is not valid: lowercase letters, digits, '-' and '_'"
    )
    expect(page.locator("#new-name")).to_have_value("Team Docs")  # kept, to correct
    page.fill("#new-name", "handbook")
    page.click("#create")
    expect(page.locator("#kb-title")).to_have_text("handbook")
    page.set_input_files("#files", [docs / "passwords.md"])
    expect(page.locator("#documents tbody tr")).to_have_count(1)

    # A corrupt PDF, an unsupported binary and a file over the server's limit, dropped.
    corrupt = b"%PDF-1.7\n" + bytes((i * 37 + 11) % 256 for i in range(2000))
    big = b"# Big\n\n" + b"word " * (BODY_LIMIT // 5)
    drop(page, {"broken.pdf": corrupt, "tool.exe": b"MZ\x90\x00\x03\x00", "big.md": big})
    expect(page.locator("table.uploads tbody tr")).to_have_count(3)
    reasons = {
        "broken.pdf": "the PDF cannot be parsed: ",
        "tool.exe": "unsupported file type '.exe'; supported types: .txt",
        "big.md": "larger than the 112.0 KB this server takes for one file; split it",
    }
    for name, reason in reasons.items():
        row = page.locator(f"tr[data-file='{name}']")
        expect(row.locator(".badge")).to_have_text("skipped")
        expect(row.locator("[role=alert]")).to_contain_text(reason)
    summary = page.locator(".upload-summary")
    expect(summary).to_contain_text("3 skipped; 0 chunks written")
    expect(summary).to_contain_text("Files skipped or not sent changed nothing already stored.")
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    expect(page.locator("#kb-stats")).to_contain_text("1 document ·")
    shot(page, artifacts, "knowledge-bad-files")

    # What was stored before still answers.
    page.fill("#query", "reset password")
    page.click("#search")
    expect(page.locator("#results .hit").first).to_have_attribute("data-source", "passwords.md")

    # Empty questions and bad numbers say so.
    page.click("#ask")
    expect(page.locator("#answer [role=alert]")).to_have_text("Write a question first.")
    page.fill("#search-k", "0")
    page.click("#search")
    expect(page.locator("#results [role=alert]")).to_have_text(
        "Results must be a whole number from 1 to 100."
    )

    # A knowledge base that does not exist, from the address.
    page.goto("/ui/knowledge?kb=handbok")
    expect(page.locator("#banner [role=alert]")).to_contain_text(
        "No knowledge base named 'handbok'. Did you mean 'handbook'?"
    )
    expect(page.locator("#kb-view")).to_be_hidden()
    shot(page, artifacts, "knowledge-unknown")


@pytest.mark.browser
def test_the_pasted_key_is_sent_with_uploads(
    page: Page, live: LiveServer, store: Store, docs: Path, artifacts: Path
) -> None:
    mine, secret = create_key(store, "team", knowledge_bases=["team-*"])
    page.goto("/ui/knowledge")
    expect(page.locator("#banner [role=alert]")).to_contain_text("Missing API key")
    page.fill("#api-key", secret)
    page.click("#key-form button")
    expect(page.locator("#kb-list")).to_contain_text("No knowledge bases yet.")
    page.fill("#new-name", "private")
    page.click("#create")
    expect(page.locator("#create-status [role=alert]")).to_contain_text(
        "Key 'team' may not use knowledge base 'private' (it may use: team-*)."
    )
    page.fill("#new-name", "team-docs")
    page.click("#create")
    expect(page.locator("#kb-title")).to_have_text("team-docs")
    page.set_input_files("#files", [docs / "passwords.md"])
    expect(page.locator("tr[data-file='passwords.md'] .badge")).to_have_text("added")
    embedded = [r for r in store.recent(limit=20) if r.kind == "embedding"]
    assert embedded and {r.api_key for r in embedded} == {mine.id}
    shot(page, artifacts, "knowledge-with-key")


# -- Models -------------------------------------------------------------------------------


def shown_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        ".catalog-table tbody tr", "rows => rows.map(r => r.dataset.model)"
    )
    return ids


@pytest.mark.browser
def test_catalog_filters_details_and_recommend(
    page: Page, live: LiveServer, artifacts: Path
) -> None:
    page.goto("/ui/models")
    rows = page.locator(".catalog-table tbody tr")
    expect(rows).to_have_count(len(catalog()))
    expect(page.locator("#count")).to_contain_text(f"of {len(catalog())} models")

    page.fill("#task", "code")
    page.select_option("#local", "true")
    page.click("#filters button[type=submit]")
    expected = [m.id for m in filter_models(task="code", runs_locally=True)]
    expect(rows).to_have_count(len(expected))
    assert shown_ids(page) == expected
    expect(page).to_have_url(re.compile(r"task=code&local=true"))
    page.reload()  # the filters are in the address
    expect(page.locator("#task")).to_have_value("code")
    expect(rows).to_have_count(len(expected))

    page.locator("tr[data-model='local:qwen2.5-coder-0.5b'] button").click()
    details = page.locator("#details")
    qwen = find("local:qwen2.5-coder-0.5b")
    expect(details.locator(".model-name")).to_have_text(qwen.name)
    expect(details).to_contain_text("24 layers")
    expect(details).to_contain_text("Installed file")
    shot(page, artifacts, "models-catalog")

    # A filter the server refuses: its message, and the last table dimmed.
    page.fill("#task", "zzzz")
    page.click("#filters button[type=submit]")
    expect(page.locator("#catalog-error [role=alert]")).to_contain_text(
        "No use case matches the task 'zzzz'"
    )
    expect(page.locator("#catalog")).to_have_class(re.compile("stale"))
    page.click("#reset")
    expect(rows).to_have_count(len(catalog()))

    task = "classify support tickets offline on a laptop"
    page.fill("#task-words", task)
    page.click("#recommend")
    picks = page.locator(".picks li")
    best = recommend(task, top=5)
    expect(picks).to_have_count(len(best))
    expect(picks.first).to_have_attribute("data-model", best[0].model.id)
    expect(page.locator("#picks")).to_contain_text("Read as: classification")
    shot(page, artifacts, "models-recommend")


@pytest.mark.browser
def test_sizing_calculator_answers_live(page: Page, live: LiveServer, artifacts: Path) -> None:
    page.goto("/ui/models")
    figures = page.locator("#size-figures")

    def value(label: str) -> Locator:
        return figures.locator(f"tr[data-figure='{label}'] td.value")

    llama = find("llama-3.1-8b")
    page.select_option("#size-model", llama.id)
    page.select_option("#precision", "q4_k_m")
    page.fill("#context", "8192")
    report = size(llama.sizing_architecture(), precision="q4_k_m", context=8192)
    expect(value("Weights (q4_k_m)")).to_have_text(_gib(report.weights))
    expect(value("KV cache (f16)")).to_have_text(_gib(report.kv_cache))
    expect(value("Working memory (llama.cpp)")).to_have_text(_gib(report.working))
    expect(value("Total")).to_have_text(_gib(report.inference_total))
    expect(figures.locator("h3")).to_contain_text(llama.name)
    fits = {f.device: f for f in report.fits}
    row = page.locator("#fits tr[data-device='RTX 3060 12GB'] td")
    expect(row.nth(1)).to_have_text("yes" if fits["RTX 3060 12GB"].inference else "no")
    shot(page, artifacts, "sizing-model")

    # Each change answers at once: a batch of 4 quadruples the KV cache.
    page.fill("#batch", "4")
    batched = size(llama.sizing_architecture(), precision="q4_k_m", context=8192, batch=4)
    expect(value("KV cache (f16)")).to_have_text(_gib(batched.kv_cache))
    expect(figures).to_contain_text("× 8,192 tokens × 4")

    # A bare parameter count, with the rule of thumb beside the figures.
    page.fill("#batch", "1")
    page.fill("#context", "")
    page.select_option("#precision", "fp16")
    page.check("#what-params")
    page.fill("#size-params", "7B")
    expect(page.locator("[data-rule=weights]")).to_have_text("28.0 GB")
    expect(page.locator("[data-rule=training]")).to_have_text("560 GB")
    expect(value("Weights (fp16)")).to_have_text(_gib(size("7B", precision="fp16").weights))
    expect(page.locator("#size-notes")).to_contain_text("context unknown")
    shot(page, artifacts, "sizing-params")

    # Bad input: the server's message naming the field; the last figures dimmed, then back.
    page.fill("#size-params", "seven")
    expect(page.locator("#size-error [role=alert]")).to_contain_text(
        "'seven' is not a parameter count; write e.g. 7B"
    )
    expect(page.locator("#size-out")).to_have_class(re.compile("stale"))
    shot(page, artifacts, "sizing-bad")
    page.fill("#size-params", "135M")
    expect(page.locator("#size-error")).to_be_empty()
    expect(page.locator("[data-rule=weights]")).to_have_text("0.5 GB")
    page.fill("#context", "0")
    expect(page.locator("#size-error [role=alert]")).to_contain_text("context")


@pytest.mark.slow
@pytest.mark.browser
def test_ask_with_the_real_local_model(
    browser: Browser, store: Store, docs: Path, artifacts: Path
) -> None:
    """The page on a server whose answers come from the embedded default model."""
    gateway = Gateway(settings=Settings(default_model="local:smollm2-135m"), store=store)
    server = LiveServer(create_app(gateway, ServeConfig())).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            assert http.post("/v1/knowledge-bases", json={"name": "handbook"}).status_code == 201
        context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(120_000)
        tab = context.new_page()
        tab.goto("/ui/knowledge?kb=handbook")
        tab.set_input_files("#files", [docs / "passwords.md", docs / "guide.pdf"])
        expect(tab.locator("#documents tbody tr")).to_have_count(2, timeout=60_000)
        tab.fill("#question", "When does the reset link expire?")
        tab.click("#ask")
        answer = tab.locator(".kb-answer")
        expect(answer).to_have_attribute("data-found", "true", timeout=180_000)
        assert (answer.locator(".answer-text").text_content() or "").strip()
        expect(answer.locator(".retrieved summary")).to_contain_text("Passages retrieved")
        expect(answer.locator("a.trace-link")).to_have_attribute("href", re.compile("^/ui/trace/"))
        tab.screenshot(path=artifacts / "knowledge-local-model.png", full_page=True)
        context.close()
    finally:
        server.stop()
