"""OpenTelemetry export, received by an in-process OTLP/HTTP collector that decodes the protobuf."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from outcrop import Gateway, Settings, Store, load_settings
from outcrop.agents import Agent, tool
from outcrop.config import RetrySettings
from outcrop.errors import ConfigError, MissingExtraError, ProviderError
from outcrop.gateway import TraceInfo
from outcrop.observe.otel import (
    Telemetry,
    TelemetryConfig,
    install_telemetry,
    telemetry_config,
)
from outcrop.observe.store import TraceRow
from outcrop.providers.testing import TestModel
from outcrop.serve.app import create_app
from outcrop.serve.keys import create_key

from .serving import LiveServer

DOCS = Path(__file__).resolve().parent.parent / "docs"


class Collector:
    """An OTLP/HTTP receiver on loopback: POST /v1/traces and /v1/metrics, protobuf bodies."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                message: Any
                if self.path == "/v1/traces":
                    message = ExportTraceServiceRequest()
                elif self.path == "/v1/metrics":
                    message = ExportMetricsServiceRequest()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                message.ParseFromString(body)
                with collector.lock:
                    collector.headers.append(dict(self.headers))
                    if isinstance(message, ExportTraceServiceRequest):
                        collector.traces.append(message)
                    else:
                        collector.metrics.append(message)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def spans(self) -> list[Span]:
        with self.lock:
            return [
                span
                for request in self.traces
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]

    def span(self, outcrop_id: str) -> Span:
        found = [s for s in self.spans() if attrs(s).get("outcrop.trace_id") == outcrop_id]
        assert len(found) == 1, f"{len(found)} spans for {outcrop_id}"
        return found[0]

    def service_names(self) -> set[str]:
        with self.lock:
            return {
                str(value(a.value))
                for request in self.traces
                for resource in request.resource_spans
                for a in resource.resource.attributes
                if a.key == "service.name"
            }

    def histogram(self, name: str) -> list[tuple[dict[str, Any], int, float]]:
        """(attributes, count, sum) of each data point of the latest export of a histogram."""
        with self.lock:
            latest: dict[str, Any] = {}
            for request in self.metrics:
                for resource in request.resource_metrics:
                    for scope in resource.scope_metrics:
                        for metric in scope.metrics:
                            if metric.name == name:
                                latest[name] = metric
        metric = latest[name]
        return [
            ({a.key: value(a.value) for a in p.attributes}, p.count, p.sum)
            for p in metric.histogram.data_points
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span: Span) -> dict[str, Any]:
    return {a.key: value(a.value) for a in span.attributes}


def derived(text: str, salt: str, size: int) -> bytes:
    return hashlib.sha256(f"{salt}:{text}".encode()).digest()[:size]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_SERVICE_NAME",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    ):
        monkeypatch.delenv(name, raising=False)


def _gateway(store: Store, model: TestModel, **settings: Any) -> Gateway:
    return Gateway(
        settings=Settings(default_model="openai:gpt-4o-mini", **settings),
        store=store,
        providers={"openai": model, "test": TestModel()},
        sleep=lambda s: None,
    )


def _install(gw: Gateway, collector: Collector, **config: Any) -> Telemetry:
    telemetry = install_telemetry(gw, TelemetryConfig(endpoint=collector.url, **config))
    assert telemetry is not None
    return telemetry


def test_a_chat_call_becomes_a_span_with_the_gen_ai_attributes(
    store: Store, collector: Collector
) -> None:
    gw = _gateway(store, TestModel(["Paris is the capital."]))
    telemetry = _install(gw, collector, service_name="support-bot")
    response = gw.chat(
        "Capital of France?",
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        seed=7,
        stop=["\n\n"],
        trace=TraceInfo(prompt_name="capitals", prompt_version=3),
    )
    assert telemetry.flush()
    telemetry.shutdown()

    span = collector.span(response.id)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == Span.SpanKind.SPAN_KIND_CLIENT  # a remote provider
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.id"] == response.id
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ["\n\n"]
    assert a["gen_ai.usage.input_tokens"] == response.usage.input_tokens == 3
    assert a["gen_ai.usage.output_tokens"] == response.usage.output_tokens == 4
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["server.address"] == "api.openai.com" and a["server.port"] == 443
    assert a["outcrop.prompt.name"] == "capitals" and a["outcrop.prompt.version"] == 3
    assert a["outcrop.model"] == "openai:gpt-4o-mini"
    assert a["outcrop.cost_usd"] == 0.0
    assert "error.type" not in a
    assert span.status.code == Status.StatusCode.STATUS_CODE_UNSET
    # Its ids come from outcrop's trace id, its times from the recorded call.
    row = store.get(response.id)
    assert row is not None and row.latency_ms is not None
    assert span.trace_id == derived(response.id, "trace", 16)
    assert span.span_id == derived(response.id, "span", 8)
    assert span.parent_span_id == b""
    assert span.start_time_unix_nano == int(row.started_at * 1e9)
    assert span.end_time_unix_nano - span.start_time_unix_nano == int(row.latency_ms * 1e6)
    assert collector.service_names() == {"support-bot"}
    # Content is opt-in: neither the prompt nor the answer left the process.
    assert not [k for k in a if "messages" in k]
    assert "Capital of France" not in str(span) and "Paris" not in str(span)


def test_a_streamed_call_carries_its_time_to_first_token(
    store: Store, collector: Collector
) -> None:
    gw = _gateway(store, TestModel(["one two three four five"]))
    telemetry = _install(gw, collector)
    with gw.stream("Count", max_tokens=3) as stream:
        text = "".join(stream.text())
    assert text.split() == ["one", "two", "three"]
    telemetry.shutdown()
    a = attrs(collector.span(stream.trace_id))
    assert a["outcrop.stream"] is True
    assert a["outcrop.ttft_ms"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["length"]
    assert a["gen_ai.usage.output_tokens"] == 3


def test_a_failed_call_is_an_error_span_with_its_error_type(
    store: Store, collector: Collector
) -> None:
    failing = TestModel([ProviderError("upstream broke", status_code=500)])
    gw = _gateway(store, failing, retry=RetrySettings(max_attempts=1))
    telemetry = _install(gw, collector)
    with pytest.raises(ProviderError):
        gw.chat("Hello", fallbacks=False)
    telemetry.shutdown()
    (row,) = store.recent(limit=1)
    assert row.status == "error"
    span = collector.span(row.id)
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert "upstream broke" in span.status.message
    assert attrs(span)["error.type"] == "ProviderError"
    duration = collector.histogram("gen_ai.client.operation.duration")
    assert [p[0].get("error.type") for p in duration] == ["ProviderError"]


def test_an_agent_run_is_one_trace_though_its_steps_finish_first(
    store: Store, collector: Collector
) -> None:
    from outcrop.types import ToolCall

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = TestModel([ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3}), "It is 5."])
    gw = _gateway(store, model)
    telemetry = _install(gw, collector)
    result = Agent("openai:gpt-4o-mini", [add], gateway=gw).run("What is 2 + 3?")
    assert result.output == "It is 5."
    # A judge scores the run afterwards: a child recorded after its parent.
    judged = gw.chat("Was it right?", model="test", trace=TraceInfo(parent_id=result.trace_id))
    telemetry.shutdown()

    root = collector.span(result.trace_id)
    assert root.name == "invoke_agent"
    assert attrs(root)["gen_ai.operation.name"] == "invoke_agent"
    children = [s for s in collector.spans() if s.parent_span_id == root.span_id]
    names = sorted(s.name for s in children)
    assert names == ["chat gpt-4o-mini", "chat gpt-4o-mini", "chat test", "execute_tool add"]
    assert {s.trace_id for s in [*children, root]} == {derived(result.trace_id, "trace", 16)}
    step = next(s for s in children if s.name == "execute_tool add")
    assert attrs(step)["gen_ai.tool.name"] == "add"
    assert "gen_ai.tool.call.arguments" not in attrs(step)  # content is opt-in
    assert collector.span(judged.id).parent_span_id == root.span_id
    assert collector.span(judged.id).kind == Span.SpanKind.SPAN_KIND_INTERNAL  # in process
    assert root.kind == Span.SpanKind.SPAN_KIND_INTERNAL
    # The run's tokens are its steps' tokens: the metrics count the model calls only.
    tokens = collector.histogram("gen_ai.client.token.usage")
    inputs = [p for p in tokens if p[0]["gen_ai.token.type"] == "input"]
    assert sum(p[1] for p in inputs) == 3  # two agent steps and the judge


def test_a_grandchild_recorded_before_its_parent_and_root_lands_in_the_root_trace(
    store: Store, collector: Collector
) -> None:
    gw = _gateway(store, TestModel())
    telemetry = _install(gw, collector)

    def row(id_: str, parent: str | None, kind: str) -> TraceRow:
        return TraceRow(
            id=id_,
            parent_id=parent,
            kind=kind,
            started_at=time.time(),
            requested_model="test",
            model="test",
            provider="test",
            stream=False,
            status="ok",
            request={"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            latency_ms=5.0,
        )

    store.record(row("grandchild", "child", "judge"))
    store.record(row("child", "root", "chat"))
    assert not collector.spans()  # both wait for the run they belong to
    store.record(row("root", None, "chain"))
    telemetry.shutdown()
    trace = derived("root", "trace", 16)
    assert collector.span("grandchild").trace_id == trace
    assert collector.span("grandchild").parent_span_id == derived("child", "span", 8)
    assert collector.span("child").trace_id == trace
    assert collector.span("root").trace_id == trace


def test_rows_whose_parent_never_comes_are_sent_at_shutdown(
    store: Store, collector: Collector
) -> None:
    gw = _gateway(store, TestModel())
    telemetry = _install(gw, collector)
    orphan = gw.chat("hi", model="test", trace=TraceInfo(parent_id="gone"))
    telemetry.flush()
    assert not collector.spans()
    telemetry.shutdown()
    span = collector.span(orphan.id)
    assert span.trace_id == derived("gone", "trace", 16)
    assert span.parent_span_id == derived("gone", "span", 8)


def test_content_is_exported_only_when_asked_for(store: Store, collector: Collector) -> None:
    from outcrop.types import ToolCall

    @tool
    def lookup(city: str) -> str:
        """Look a city up."""
        return f"{city} has 2.1 million people."

    model = TestModel(
        [ToolCall(id="c1", name="lookup", arguments={"city": "Paris"}), "About 2.1 million."]
    )
    gw = _gateway(store, model)
    telemetry = _install(gw, collector, capture_content=True)
    result = Agent("openai:gpt-4o-mini", [lookup], "Be brief.", gateway=gw).run(
        "How many people live in Paris?"
    )
    telemetry.shutdown()
    steps = [s for s in collector.spans() if s.name == "chat gpt-4o-mini"]
    first = min(steps, key=lambda s: s.start_time_unix_nano)
    a = attrs(first)
    inputs = json.loads(a["gen_ai.input.messages"])
    assert inputs[0]["role"] == "system"
    assert inputs[0]["parts"][0]["content"].startswith("Be brief.")
    assert inputs[-1]["parts"] == [{"type": "text", "content": "How many people live in Paris?"}]
    outputs = json.loads(a["gen_ai.output.messages"])
    assert outputs == [
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"city": "Paris"}}
            ],
            "finish_reason": "tool_calls",
        }
    ]
    last = json.loads(
        attrs(max(steps, key=lambda s: s.start_time_unix_nano))["gen_ai.input.messages"]
    )
    assert last[-1] == {
        "role": "tool",
        "parts": [
            {"type": "tool_call_response", "id": "c1", "response": "Paris has 2.1 million people."}
        ],
    }
    (step,) = [s for s in collector.spans() if s.name == "execute_tool lookup"]
    assert json.loads(attrs(step)["gen_ai.tool.call.arguments"]) == {"city": "Paris"}
    assert attrs(step)["gen_ai.tool.call.result"] == "Paris has 2.1 million people."
    run = attrs(collector.span(result.trace_id))
    assert json.loads(run["gen_ai.output.messages"])[0]["parts"][0]["content"] == (
        "About 2.1 million."
    )


def test_metrics_follow_the_conventions(store: Store, collector: Collector) -> None:
    gw = _gateway(store, TestModel(["a b c", "d e"]))
    telemetry = _install(gw, collector)
    gw.chat("one two")
    gw.chat("three four five")
    telemetry.shutdown()
    tokens = {
        p[0]["gen_ai.token.type"]: p for p in collector.histogram("gen_ai.client.token.usage")
    }
    assert tokens["input"][1:] == (2, 5.0)
    assert tokens["output"][1:] == (2, 5.0)
    assert tokens["input"][0] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.token.type": "input",
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    ((labels, count, seconds),) = collector.histogram("gen_ai.client.operation.duration")
    assert count == 2 and 0 < seconds < 5 and "error.type" not in labels


def test_the_server_exports_the_calls_an_openai_client_makes(
    store: Store, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-east")
    gw = _gateway(store, TestModel(["Bonjour."]))
    key, secret = create_key(store, "mobile-app")
    server = LiveServer(create_app(gw)).start()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
        reply = client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
        client.close()
    finally:
        server.stop()  # the app's shutdown sends what is left
    assert reply.choices[0].message.content == "Bonjour."
    span = collector.span(reply.id.removeprefix("chatcmpl-"))
    a = attrs(span)
    assert span.name == "chat gpt-4o-mini"
    assert a["outcrop.api_key_id"] == key.id
    assert secret not in str(span)
    assert collector.service_names() == {"gateway-east"}
    assert collector.headers[0]["authorization"] == "Bearer abc"


def test_an_unreachable_collector_never_breaks_or_slows_calls(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = _gateway(store, TestModel())
    telemetry = install_telemetry(gw, TelemetryConfig(endpoint=f"http://127.0.0.1:{port}"))
    assert telemetry is not None
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(20):
            assert gw.chat("hi").text == "ok"
        assert time.perf_counter() - started < 2.0
        telemetry.flush(timeout_s=5)
    assert telemetry.failing
    started = time.perf_counter()
    telemetry.shutdown()
    assert time.perf_counter() - started < 3.0  # a stopping server does not wait on it
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert warnings[0].name == "outcrop.otel"
    assert f"127.0.0.1:{port}" in message and "OTEL_EXPORTER_OTLP_ENDPOINT" in message
    assert store.count() == 40  # every call recorded


# -- configuration and bad input ------------------------------------------------------------


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outcrop.toml"
    path.write_text(text)
    return path


def test_the_telemetry_table_turns_export_on(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'default_model = "test"\n\n[telemetry]\notlp_endpoint = "http://collector:4318"\n'
        'service_name = "bot"\ncapture_content = true\n\n[telemetry.headers]\nx-team = "search"\n',
    )
    config = telemetry_config(load_settings(path), {})
    assert config == TelemetryConfig(
        endpoint="http://collector:4318",
        headers={"x-team": "search"},
        service_name="bot",
        capture_content=True,
    )
    assert config.url("traces") == "http://collector:4318/v1/traces"
    # The standard variables override the file.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example.com",
        "OTEL_SERVICE_NAME": "bot-2",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=ranking,api-key=a%2Cb",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false",
    }
    config = telemetry_config(load_settings(path), env)
    assert config == TelemetryConfig(
        endpoint="https://otel.example.com",
        headers={"x-team": "ranking", "api-key": "a,b"},
        service_name="bot-2",
        capture_content=False,
    )
    # Without the table or a variable, nothing is exported.
    assert telemetry_config(Settings(), {}) is None
    assert telemetry_config(Settings(), {"OTEL_SERVICE_NAME": "x"}) == TelemetryConfig(
        service_name="x"
    )


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        (
            'capture_content = "yes"',
            3,
            "telemetry.capture_content: Input should be a valid boolean",
        ),
        ("service_name = 5", 3, "telemetry.service_name: Input should be a valid string"),
        (
            'endpoint = "http://x:4318"',
            3,
            "telemetry.endpoint: unknown setting (known settings: capture_content, headers, "
            "otlp_endpoint, service_name)",
        ),
        (
            'otlp_endpoint = "collector:4318"',
            3,
            "give the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318 (got 'collector:4318')",
        ),
        (
            'otlp_endpoint = "http://c:4318/v1/traces"',
            3,
            "without /v1/traces or /v1/metrics",
        ),
        ('headers = { "bad name" = "x" }', 3, "'bad name' is not an HTTP header name"),
        ("[telemetry.headers]\nx = 1", 4, "telemetry.headers.x: Input should be a valid string"),
    ],
)
def test_a_malformed_telemetry_table_names_the_file_line_and_field(
    tmp_path: Path, body: str, line: int, expected: str
) -> None:
    path = _toml(tmp_path, f'default_model = "test"\n[telemetry]\n{body}\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert expected in str(caught.value)
    assert path.read_text().endswith(f"{body}\n")  # the file is left as it was


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT: give the collector's OTLP/HTTP URL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "authorization"},
            "OTEL_EXPORTER_OTLP_HEADERS: write name=value pairs split by commas",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "a=b%0Ac"},
            "OTEL_EXPORTER_OTLP_HEADERS: the value of header 'a' holds a line break",
        ),
        (
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "sometimes"},
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: write true or false",
        ),
    ],
)
def test_a_bad_otel_variable_is_named(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        telemetry_config(Settings(), env)
    assert str(caught.value).startswith(expected)


def test_a_collector_that_refuses_the_export_is_named_in_one_warning(
    store: Store, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    gw = _gateway(store, TestModel())
    wrong = install_telemetry(gw, TelemetryConfig(endpoint=collector.url + "/otlp"))
    assert wrong is not None
    caplog.set_level(logging.INFO)
    gw.chat("hi")
    wrong.flush()
    gw.chat("hi")
    wrong.flush()
    wrong.shutdown()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "code: 404" in warnings[0], warnings
    assert "/otlp" in warnings[0]


def test_outcrop_serve_refuses_to_start_with_a_bad_variable(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        create_app(_gateway(store, TestModel()))


def test_export_without_the_extra_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(MissingExtraError) as caught:
        telemetry_config(Settings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert "pip install 'outcrop[otel]'" in str(caught.value)
    # Not configured, the extra is never needed.
    assert telemetry_config(Settings(), {}) is None


def test_outcrop_does_not_import_opentelemetry_unless_export_is_on() -> None:
    code = (
        "import sys, outcrop, outcrop.config, outcrop.observe.otel, outcrop.serve.app\n"
        "heavy = ('opentelemetry.sdk', 'opentelemetry.exporter')\n"
        "assert not [m for m in sys.modules if m.startswith(heavy)], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the docs ---------------------------------------------------------------------------------


def _blocks(language: str) -> list[str]:
    text = (DOCS / "monitor.md").read_text(encoding="utf-8")
    section = text.split("## OpenTelemetry", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_the_docs_toml_example_loads(tmp_path: Path) -> None:
    (block,) = _blocks("toml")
    settings = load_settings(_toml(tmp_path, block))
    config = telemetry_config(settings, {})
    assert config is not None and config.endpoint == "http://127.0.0.1:4318"
    assert config.capture_content is False


def test_the_docs_python_example_exports_a_span(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    (block,) = _blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(block, "monitor.md", "exec"), namespace)
    (span,) = collector.spans()
    assert span.name == "chat test"
    assert attrs(span)["gen_ai.usage.output_tokens"] == 1
