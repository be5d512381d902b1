import pytest

from outcrop import ChatRequest, Gateway, Message, Settings, Store
from outcrop.providers.testing import FunctionModel, TestModel


def test_test_model_queue_then_default(store: Store):
    model = TestModel(["first"], default="later")
    gw = Gateway(settings=Settings(default_model="test"), store=store, providers={"test": model})
    assert gw.chat("a").text == "first"
    assert gw.chat("b").text == "later"
    assert [r.messages[-1].text for r in model.requests] == ["a", "b"]


def test_test_model_respects_max_tokens_and_stop(store: Store):
    model = TestModel(["one two three four five", "alpha beta. gamma"])
    gw = Gateway(settings=Settings(default_model="test"), store=store, providers={"test": model})
    short = gw.chat("x", max_tokens=2)
    assert short.text == "one two "
    assert short.finish_reason == "length"
    stopped = gw.chat("x", stop=["."])
    assert stopped.text == "alpha beta"
    assert stopped.finish_reason == "stop"


def test_function_model_sees_the_request(store: Store):
    def echo(request: ChatRequest) -> str:
        return request.messages[-1].text.upper()

    gw = Gateway(
        settings=Settings(default_model="fn"), store=store, providers={"fn": FunctionModel(echo)}
    )
    assert gw.chat("shout").text == "SHOUT"


def test_function_model_may_return_a_message(store: Store):
    gw = Gateway(
        settings=Settings(default_model="fn"),
        store=store,
        providers={"fn": FunctionModel(lambda r: Message.assistant("done"))},
    )
    assert gw.chat("x").text == "done"


def test_the_request_log_can_be_bounded(store: Store):
    model, fn = TestModel(keep=3), FunctionModel(lambda request: "ok", keep=0)
    gw = Gateway(store=store, providers={"test": model, "fn": fn})
    for i in range(10):
        gw.chat(f"q{i}", model="test")
        gw.chat(f"f{i}", model="fn")
    assert [r.messages[-1].text for r in model.requests[-3:]] == ["q7", "q8", "q9"]
    assert 3 <= len(model.requests) <= 6  # trimmed now and then, never past twice keep
    assert fn.requests == []
    assert TestModel().keep is None  # every request, by default
    for bad in (-1, "10", 2.5, True):
        with pytest.raises(ValueError, match="keep must be None or a whole number"):
            TestModel(keep=bad)  # type: ignore[arg-type]
