"""Text that is not Unicode (a lone surrogate sent as a JSON escape) is refused by name."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest

from outcrop import Gateway, Settings, Store
from outcrop.providers.testing import FunctionModel
from outcrop.serve.app import create_app

from .serving import LiveServer


@pytest.fixture
def live(store: Store) -> Iterator[LiveServer]:
    gw = Gateway(
        settings=Settings(default_model="fn:echo"),
        store=store,
        providers={"fn": FunctionModel(lambda request: "You said: " + request.messages[-1].text)},
    )
    server = LiveServer(create_app(gw)).start()
    yield server
    server.stop()


def _chat(live: LiveServer, raw_content: str) -> httpx.Response:
    # Written by hand: json.dumps would escape the backslash of a "\\ud800" escape.
    body = '{"model": "fn:echo", "messages": [{"role": "user", "content": "' + raw_content + '"}]}'
    return httpx.post(
        live.url + "/v1/chat/completions",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )


def test_a_lone_surrogate_is_a_400_naming_the_field_and_nothing_is_called(
    live: LiveServer, store: Store
) -> None:
    before = store.count()
    response = _chat(live, "hi \\ud800 there")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content"
    assert "not valid Unicode" in error["message"]
    assert store.count() == before


def test_escaped_surrogate_pairs_and_other_text_pass(live: LiveServer) -> None:
    response = _chat(live, "smile \\ud83d\\ude00 caf\\u00e9 \u4e2d")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "You said: smile 😀 café 中"
