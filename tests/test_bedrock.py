"""Amazon Bedrock through boto3, with botocore's Stubber: every request is checked against
Bedrock's real service model, and every stubbed answer against its output shapes. No network.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from outcrop import (
    Gateway,
    InvalidRequestError,
    Message,
    ProviderError,
    Settings,
    Store,
    ToolCall,
    UnknownModelError,
)
from outcrop.providers.bedrock import JSON_TOOL, BedrockProvider, to_converse
from outcrop.types import ChatRequest

from .fake_openai import tiny_png

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def client() -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def gw(client: Any, store: Store) -> Gateway:
    return Gateway(
        settings=Settings(default_model=f"bedrock:{HAIKU}"),
        store=store,
        providers={"bedrock": BedrockProvider(client=client)},
        sleep=lambda s: None,
    )


def add_stream(
    stub: Stubber, client: Any, events: list[dict[str, Any]], expected: dict | None
) -> None:
    """Queue a ConverseStream answer. Each event is validated against Bedrock's event
    shapes; the Stubber validates the request and the first event as the response."""
    shape = client.meta.service_model.operation_model("ConverseStream").output_shape
    event_shape = shape.members["stream"]
    for event in events:
        report = ParamValidator().validate(event, event_shape)
        assert not report.has_errors(), report.generate_report()
    response: dict[str, Any] = {"stream": events[0]}
    stub.add_response("converse_stream", response, expected)
    # Validated with one event; the provider then reads them all, as from botocore's EventStream.
    response["stream"] = iter(events)


def converse_answer(text: str = "", tool: dict[str, Any] | None = None, **usage: int) -> dict:
    content: list[dict[str, Any]] = [{"text": text}] if text else []
    if tool:
        content.append({"toolUse": tool})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "tool_use" if tool else "end_turn",
        "usage": {
            "inputTokens": usage.get("i", 12),
            "outputTokens": usage.get("o", 4),
            "totalTokens": usage.get("i", 12) + usage.get("o", 4),
        },
        "metrics": {"latencyMs": 100},
    }


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def test_plain_chat(gw: Gateway, stub: Stubber, store: Store):
    stub.add_response(
        "converse",
        converse_answer("Paris.", i=20, o=3),
        {
            "modelId": HAIKU,
            "messages": [user("Capital of France?")],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {
                "maxTokens": 50,
                "temperature": 0.2,
                "topP": 0.9,
                "stopSequences": ["\n\n"],
            },
        },
    )
    response = gw.chat(
        "Capital of France?",
        system="Be brief.",
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
    )
    assert response.text == "Paris."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 3)
    assert response.cost_usd == pytest.approx((20 * 0.25 + 3 * 1.25) / 1e6)
    row = store.get(response.id)
    assert (row.model, row.status, row.cost_usd) == (f"bedrock:{HAIKU}", "ok", response.cost_usd)


def test_streamed_chat_records_the_same_usage(gw: Gateway, client: Any, stub: Stubber):
    events = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Par"}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "is."}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {
            "metadata": {
                "usage": {"inputTokens": 20, "outputTokens": 3, "totalTokens": 23},
                "metrics": {"latencyMs": 90},
            }
        },
    ]
    add_stream(stub, client, events, {"modelId": HAIKU, "messages": [user("Capital of France?")]})
    stub.add_response(
        "converse",
        converse_answer("Paris.", i=20, o=3),
        {"modelId": HAIKU, "messages": [user("Capital of France?")]},
    )
    stream = gw.stream("Capital of France?")
    assert list(stream.text()) == ["Par", "is."]
    plain = gw.chat("Capital of France?")
    assert stream.response.usage == plain.usage
    assert stream.response.cost_usd == plain.cost_usd


def test_streamed_tool_use(gw: Gateway, client: Any, stub: Stubber):
    events = [
        {"messageStart": {"role": "assistant"}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "t1", "name": "get_weather"}},
                "contentBlockIndex": 0,
            }
        },
        {
            "contentBlockDelta": {
                "delta": {"toolUse": {"input": '{"city": '}},
                "contentBlockIndex": 0,
            }
        },
        {
            "contentBlockDelta": {
                "delta": {"toolUse": {"input": '"Paris"}'}},
                "contentBlockIndex": 0,
            }
        },
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "tool_use"}},
        {
            "metadata": {
                "usage": {"inputTokens": 50, "outputTokens": 9, "totalTokens": 59},
                "metrics": {"latencyMs": 90},
            }
        },
    ]
    add_stream(stub, client, events, None)
    response = gw.stream("Weather in Paris?", tools=[WEATHER]).collect()
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [
        ToolCall(id="t1", name="get_weather", arguments={"city": "Paris"})
    ]


def test_tool_use_round_trip(gw: Gateway, stub: Stubber):
    tool_config = {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "inputSchema": {"json": WEATHER["parameters"]},
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    stub.add_response(
        "converse",
        converse_answer(
            tool={"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}
        ),
        {"modelId": HAIKU, "messages": [user("Weather in Paris?")], "toolConfig": tool_config},
    )
    first = gw.chat("Weather in Paris?", tools=[WEATHER], tool_choice="required")
    (call,) = first.tool_calls
    assert (call.id, call.name, call.arguments) == ("t1", "get_weather", {"city": "Paris"})
    second_messages = [
        user("Weather in Paris?"),
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "t1",
                        "content": [{"text": "18°C, sunny"}],
                        "status": "success",
                    }
                }
            ],
        },
    ]
    stub.add_response(
        "converse",
        converse_answer("It is 18°C and sunny in Paris."),
        {
            "modelId": HAIKU,
            "messages": second_messages,
            "toolConfig": {"tools": tool_config["tools"]},
        },
    )
    history = [Message.user("Weather in Paris?"), first.message, Message.tool("t1", "18°C, sunny")]
    final = gw.chat(history, tools=[WEATHER])
    assert "sunny" in final.text


def test_conversation_shape_is_made_valid_for_bedrock():
    calls = [
        ToolCall(id="a", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="b", name="get_time", arguments={}),
    ]
    request = ChatRequest(
        messages=[
            Message.system("S1"),
            Message.user("first"),
            Message.user("second"),
            Message.assistant("Let me check.", tool_calls=calls),
            Message.tool("a", "sunny"),
            Message.tool("b", "noon"),
            Message.user("thanks; and tomorrow?"),
            Message.assistant(""),
            Message.system("S2"),
        ],
    )
    args = to_converse(request)
    assert args["system"] == [{"text": "S1"}, {"text": "S2"}]
    roles = [t["role"] for t in args["messages"]]
    assert roles == ["user", "assistant", "user"]  # alternating, starting with the user
    assert args["messages"][0]["content"] == [{"text": "first"}, {"text": "second"}]
    results = args["messages"][2]["content"]
    assert [list(b) for b in results] == [["toolResult"], ["toolResult"], ["text"]]
    # Tools used earlier but not given now still get a spec, or Bedrock would refuse.
    names = {t["toolSpec"]["name"] for t in args["toolConfig"]["tools"]}
    assert names == {"get_weather", "get_time"}
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    input_shape = client.meta.service_model.operation_model("Converse").input_shape
    report = ParamValidator().validate({"modelId": HAIKU, **args}, input_shape)
    assert not report.has_errors(), report.generate_report()


def test_conversations_bedrock_cannot_take_are_clear_errors():
    with pytest.raises(InvalidRequestError, match="start with a user message"):
        to_converse(ChatRequest(messages=[Message.assistant("hello")]))
    with pytest.raises(InvalidRequestError, match="did not make"):
        to_converse(ChatRequest(messages=[Message.user("x"), Message.tool("zzz", "result")]))


def test_json_schema_answers_through_a_forced_tool(gw: Gateway, stub: Stubber):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    stub.add_response(
        "converse",
        converse_answer(tool={"toolUseId": "j", "name": JSON_TOOL, "input": {"name": "Ada"}}),
        {
            "modelId": HAIKU,
            "messages": [user("Invent a person.")],
            "toolConfig": {
                "tools": [
                    {
                        "toolSpec": {
                            "name": JSON_TOOL,
                            "description": "Give the answer as JSON matching the schema.",
                            "inputSchema": {"json": schema},
                        }
                    }
                ],
                "toolChoice": {"tool": {"name": JSON_TOOL}},
            },
        },
    )
    response = gw.chat(
        "Invent a person.", response_format={"type": "json_schema", "json_schema": schema}
    )
    assert response.parse_json() == {"name": "Ada"}
    assert response.finish_reason == "stop"
    assert response.tool_calls == []


def test_throttling_is_retried(gw: Gateway, stub: Stubber, store: Store):
    stub.add_client_error(
        "converse",
        service_error_code="ThrottlingException",
        service_message="Too many requests",
        http_status_code=429,
    )
    stub.add_response("converse", converse_answer("ok"), None)
    response = gw.chat("hi")
    assert response.text == "ok"
    assert [a["status_code"] for a in store.get(response.id).attempts] == [429, None]


def test_access_denied_names_the_fix(gw: Gateway, stub: Stubber):
    stub.add_client_error(
        "converse",
        service_error_code="AccessDeniedException",
        service_message="You don't have access to the model",
        http_status_code=403,
    )
    with pytest.raises(ProviderError, match="Enable the model under Model access") as info:
        gw.chat("hi")
    assert info.value.status_code == 403 and not info.value.retryable


def test_unknown_model_ids(gw: Gateway, stub: Stubber):
    with pytest.raises(UnknownModelError, match=f"Did you mean 'bedrock:{HAIKU}'"):
        gw.chat("hi", model="bedrock:anthropic.claude-3-haiku-20240307")  # no version suffix
    stub.add_client_error(
        "converse",
        service_error_code="ValidationException",
        service_message="The provided model identifier is invalid.",
        http_status_code=400,
    )
    with pytest.raises(ProviderError, match="outcrop models list"):
        gw.chat("hi", model="bedrock:acme.brand-new-model-v9")
    # Well-formed ids outcrop does not list yet go to Bedrock unchanged.
    stub.add_response("converse", converse_answer("ok"), None)
    assert gw.chat("hi", model="bedrock:us.anthropic.claude-3-7-sonnet-20250219-v1:0").text == "ok"


def test_titan_embeddings(gw: Gateway, stub: Stubber, store: Store):
    for text, vector in (("a", [0.1, 0.2]), ("bb", [0.3, 0.4])):
        data = json.dumps({"embedding": vector, "inputTextTokenCount": 2}).encode()
        stub.add_response(
            "invoke_model",
            {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"},
            {
                "modelId": "amazon.titan-embed-text-v2:0",
                "body": json.dumps({"inputText": text}),
                "contentType": "application/json",
                "accept": "application/json",
            },
        )
    result = gw.embed(["a", "bb"], model="bedrock:amazon.titan-embed-text-v2:0")
    assert result.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert result.usage.input_tokens == 4 and not result.usage.estimated
    assert result.cost_usd == pytest.approx(4 * 0.02 / 1e6)
    assert store.get(result.id).kind == "embedding"


def test_cohere_embeddings(gw: Gateway, stub: Stubber):
    data = json.dumps(
        {"embeddings": [[1.0, 0.0], [0.0, 1.0]], "id": "x", "texts": ["a", "b"]}
    ).encode()
    stub.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"},
        {
            "modelId": "cohere.embed-english-v3",
            "body": json.dumps({"texts": ["a", "b"], "input_type": "search_document"}),
            "contentType": "application/json",
            "accept": "application/json",
        },
    )
    result = gw.embed(["a", "b"], model="bedrock:cohere.embed-english-v3")
    assert result.vectors == [[1.0, 0.0], [0.0, 1.0]]
    assert result.usage.estimated  # Cohere Embed reports no token count


def test_titan_image(gw: Gateway, stub: Stubber, tmp_path: Path, store: Store):
    png = base64.b64encode(tiny_png()).decode()
    data = json.dumps({"images": [png], "error": None}).encode()
    body = {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a lighthouse"},
        "imageGenerationConfig": {
            "numberOfImages": 1,
            "width": 512,
            "height": 512,
            "cfgScale": 8.0,
            "seed": 7,
        },
    }
    stub.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"},
        {
            "modelId": "amazon.titan-image-generator-v1",
            "body": json.dumps(body),
            "contentType": "application/json",
            "accept": "application/json",
        },
    )
    result = gw.generate_image(
        "a lighthouse",
        model="bedrock:amazon.titan-image-generator-v1",
        size="512x512",
        seed=7,
        out_dir=tmp_path,
    )
    (path,) = result.paths
    assert path.read_bytes() == tiny_png()
    assert result.cost_usd == pytest.approx(0.01)
    assert store.get(result.id).kind == "image"


def test_sdxl_image(gw: Gateway, stub: Stubber, tmp_path: Path):
    png = base64.b64encode(tiny_png()).decode()
    data = json.dumps(
        {"result": "success", "artifacts": [{"base64": png, "seed": 0, "finishReason": "SUCCESS"}]}
    ).encode()
    stub.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"},
        None,
    )
    result = gw.generate_image(
        "a fox", model="bedrock:stability.stable-diffusion-xl-v1", out_dir=tmp_path
    )
    assert result.paths[0].read_bytes().startswith(b"\x89PNG")
    assert result.cost_usd == pytest.approx(0.04)


def test_missing_region_is_one_clear_line(store: Store, monkeypatch):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    gw = Gateway(settings=Settings(), store=store)
    from outcrop import UserError

    with pytest.raises(UserError, match="No AWS region for bedrock: set AWS_REGION"):
        gw.chat("hi", model=f"bedrock:{HAIKU}")


def test_tool_choice_none_sends_no_tools():
    args = to_converse(
        ChatRequest(messages=[Message.user("hi")], tools=[WEATHER], tool_choice="none")
    )
    assert "toolConfig" not in args
    history = ChatRequest(
        messages=[
            Message.user("weather?"),
            Message.assistant("", tool_calls=[ToolCall(id="t", name="get_weather", arguments={})]),
            Message.tool("t", "sunny"),
        ],
        tools=[WEATHER],
        tool_choice="none",
    )
    # Earlier tool turns still need their spec, or Bedrock refuses the conversation.
    names = [t["toolSpec"]["name"] for t in to_converse(history)["toolConfig"]["tools"]]
    assert names == ["get_weather"]
