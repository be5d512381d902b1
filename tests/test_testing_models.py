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
