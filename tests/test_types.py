import pytest
from pydantic import ValidationError

from outcrop import ChatRequest, InvalidRequestError, Message, ToolSpec, Usage
from outcrop.types import ChatOptions, validation_error


def test_message_text_becomes_a_part():
    m = Message(role="user", content="hello")
    assert m.content[0].text == "hello"
    assert m.text == "hello"


def test_tool_message_needs_the_call_id():
    with pytest.raises(ValidationError, match="tool_call_id"):
        Message(role="tool", content="42")


def test_only_assistants_carry_tool_calls():
    with pytest.raises(ValidationError, match="only assistant"):
        Message(role="user", content="x", tool_calls=[{"id": "1", "name": "f"}])


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -1), ("temperature", 2.5), ("top_p", 0), ("max_tokens", 0), ("seed", -3)],
)
def test_options_out_of_bounds_name_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        ChatRequest(messages=[Message.user("hi")], **{field: value})
    err = validation_error(info.value)
    assert isinstance(err, InvalidRequestError)
    assert err.field == field
    assert field in str(err)
    assert str(value) in str(err)


def test_unknown_option_is_rejected():
    with pytest.raises(ValidationError) as info:
        ChatRequest(messages=[Message.user("hi")], temprature=0.5)
    assert "temprature: unknown option" in str(validation_error(info.value))


def test_empty_prompt_is_rejected():
    with pytest.raises(ValidationError, match="prompt is empty"):
        ChatRequest(messages=[Message.user("   ")])
    with pytest.raises(ValidationError):
        ChatRequest(messages=[])


def test_stop_accepts_one_string_and_rejects_empty_ones():
    assert ChatOptions(stop="END").stop == ["END"]
    with pytest.raises(ValidationError, match="must not be empty"):
        ChatOptions(stop=[""])


def test_tool_choice_must_name_a_given_tool():
    tool = ToolSpec(name="add")
    ok = ChatRequest(messages=[Message.user("x")], tools=[tool], tool_choice={"name": "add"})
    assert ok.tool_choice.name == "add"
    with pytest.raises(ValidationError, match="not in tools"):
        ChatRequest(messages=[Message.user("x")], tools=[tool], tool_choice={"name": "mul"})


def test_tool_names_are_checked():
    with pytest.raises(ValidationError):
        ToolSpec(name="has space")


def test_json_schema_format_needs_a_schema():
    with pytest.raises(ValidationError, match="needs a json_schema"):
        ChatRequest(messages=[Message.user("x")], response_format={"type": "json_schema"})


def test_usage_adds_up():
    total = Usage(input_tokens=3, output_tokens=4) + Usage(input_tokens=1, output_tokens=2)
    assert (total.input_tokens, total.output_tokens, total.total_tokens) == (4, 6, 10)


def test_request_round_trips_through_json():
    req = ChatRequest(
        model="local:smollm2-135m",
        messages=[Message.system("be brief"), Message.user("hi")],
        temperature=0.3,
        stop=["\n"],
        tools=[ToolSpec(name="now", description="the time")],
        response_format={"type": "json_schema", "json_schema": {"type": "object"}},
    )
    assert ChatRequest.model_validate_json(req.model_dump_json()) == req


def test_text_must_be_valid_unicode():
    with pytest.raises(ValidationError, match="lone surrogate"):
        Message.user("bad \udcff byte")
