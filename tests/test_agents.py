"""Agents on the test doubles (every path) and on the real local model (a calculator task)."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest

from outcrop import Gateway, Settings, Store, ToolCall, UserError
from outcrop.agents import Agent, calculate, calculator, current_datetime, tool
from outcrop.providers.testing import TestModel


@tool
def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool(timeout=0.2)
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "woke up"


@tool(timeout=0.2)
async def slow_async(seconds: float) -> str:
    """Sleep without blocking, then answer."""
    await asyncio.sleep(seconds)
    return "woke up"


@tool(requires_approval=True)
def send_email(to: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


def call(name: str, i: int = 1, **arguments: object) -> ToolCall:
    return ToolCall(id=f"c{i}", name=name, arguments=arguments)


@pytest.fixture
def gw(store: Store) -> Gateway:
    return Gateway(
        settings=Settings(default_model="test"), store=store, providers={"test": TestModel()}
    )


def agent(gw: Gateway, replies: list, tools: list, **kw) -> tuple[Agent, TestModel]:
    model = TestModel(replies)
    gw.providers["test"] = model
    return Agent("test", tools, gateway=gw, **kw), model


def test_schema_from_type_hints_and_docstring():
    spec = add.spec()
    assert spec.description == "Add two whole numbers."
    assert spec.parameters["properties"]["a"] == {
        "type": "integer",
        "description": "The first number.",
    }
    assert spec.parameters["required"] == ["a", "b"]

    @tool
    def pick(colour: Literal["red", "blue"] = "red") -> str:
        """Pick a colour."""
        return colour

    assert pick.parameters["properties"]["colour"]["enum"] == ["red", "blue"]


def test_unsupported_functions_are_refused_at_decoration():
    with pytest.raises(UserError, match="no type hint"):

        @tool
        def untyped(x):
            return x

    with pytest.raises(UserError, match=r"\*args"):

        @tool
        def varargs(*args: int) -> int:
            return 0

    with pytest.raises(UserError, match="cannot be turned into a JSON schema"):

        @tool
        def callback(fn: type(lambda: 0)) -> int:  # type: ignore[valid-type]
            return 0


def test_multi_step_and_parallel_calls(gw: Gateway, store: Store):
    a, model = agent(
        gw,
        [
            [call("add", 1, a=2, b=3), call("add", 2, a=10, b=20)],
            call("add", 3, a=5, b=30),
            "The total is 35.",
        ],
        [add],
    )
    result = a.run("Add things up.")
    assert (result.status, result.output) == ("done", "The total is 35.")
    tools = [s for s in result.steps if s.kind == "tool"]
    assert [s.text for s in tools] == ["5", "30", "35"]
    second = model.requests[1].messages
    assert [m.role for m in second[-3:]] == ["assistant", "tool", "tool"]
    run_row = store.get(result.trace_id)
    assert run_row.kind == "agent" and run_row.status == "ok"
    children = store.children(result.trace_id)
    assert [c.kind for c in children].count("tool") == 3
    assert [c.kind for c in children].count("chat") == 3
    assert run_row.output_tokens == sum(c.output_tokens for c in children if c.kind == "chat")


def test_validation_errors_and_unknown_tools_go_back_to_the_model(gw: Gateway):
    a, model = agent(
        gw,
        [
            [call("add", 1, a="two", b=3), call("multiply", 2, a=1, b=2)],
            call("add", 3, a=2, b=3),
            "5",
        ],
        [add],
    )
    result = a.run("2 + 3?")
    assert result.output == "5"
    first_results = [m.text for m in model.requests[1].messages if m.role == "tool"]
    assert "Invalid arguments for add: a:" in first_results[0]
    assert first_results[1] == "There is no tool named 'multiply'. Tools: add."


def test_max_steps(gw: Gateway):
    a, _ = agent(gw, [call("add", i, a=i, b=i) for i in range(1, 10)], [add], max_steps=3)
    result = a.run("loop")
    assert result.status == "max_steps"
    assert sum(1 for s in result.steps if s.kind == "model") == 3


def test_a_repeated_call_is_not_run_again(gw: Gateway):
    a, model = agent(gw, [call("add", 1, a=1, b=1), call("add", 2, a=1, b=1), "2"], [add])
    result = a.run("1+1")
    assert result.output == "2"
    assert sum(1 for s in result.steps if s.kind == "tool") == 1
    assert "already have these results" in model.requests[2].messages[-1].text


@pytest.mark.parametrize("slow_tool", [slow, slow_async])
def test_nothing_escapes_a_tool_timeout(gw: Gateway, slow_tool):
    a, model = agent(gw, [call(slow_tool.name, 1, seconds=5), "gave up"], [slow_tool])
    started = time.monotonic()
    result = a.run("wait")
    assert time.monotonic() - started < 2
    assert result.output == "gave up"
    assert (
        "did not finish within 0.2 s"
        in next(m for m in model.requests[1].messages if m.role == "tool").text
    )


def test_tool_output_is_capped(gw: Gateway):
    @tool(max_output_chars=50)
    def chatty() -> str:
        """Talk a lot."""
        return "x" * 1000

    a, model = agent(gw, [call("chatty"), "done"], [chatty])
    a.run("talk")
    text = next(m for m in model.requests[1].messages if m.role == "tool").text
    assert text.startswith("x" * 50) and "cut at 50 characters" in text


def test_approval_pauses_and_resumes(gw: Gateway, store: Store):
    a, model = agent(
        gw,
        [
            [call("send_email", 1, to="ada@example.com", body="hi"), call("add", 2, a=1, b=1)],
            "Email sent.",
        ],
        [send_email, add],
    )
    paused = a.run("Email Ada and add 1+1.")
    assert paused.status == "pending_approval"
    assert [c.name for c in paused.pending] == ["send_email"]
    assert [s.tool for s in paused.steps if s.kind == "tool"] == ["add"]  # the rest ran
    assert store.get(paused.trace_id).status == "pending"
    done = a.resume(paused, approved=True)
    assert (done.status, done.output) == ("done", "Email sent.")
    assert "sent to ada@example.com" in [m.text for m in model.requests[1].messages]
    assert store.get(done.trace_id).status == "ok"


def test_a_refused_call_is_reported_to_the_model(gw: Gateway):
    a, model = agent(
        gw, [call("send_email", 1, to="x@example.com", body="hi"), "Not sent."], [send_email]
    )
    paused = a.run("Email x.")
    result = a.resume(paused, approved=False)
    assert result.output == "Not sent."
    assert "refused" in next(m for m in model.requests[1].messages if m.role == "tool").text


def test_calculator_is_safe_and_understands_everyday_notation():
    assert calculate("17.5% of 2,340") == 409.5
    assert calculate("0.175 * 2340") == 409.5
    assert calculate("2 ** 10 + sqrt(16)") == 1028
    for bad in (
        "__import__('os').system('echo hi')",
        "open('/etc/passwd')",
        "9 ** 9 ** 9",
        "(1).__class__",
        "x + 1",
    ):
        with pytest.raises(ValueError):
            calculate(bad)
    assert calculator.invoke({"expression": "1/0"}).ok is False


def test_datetime_tool():
    assert current_datetime.invoke({}).ok
    bad = current_datetime.invoke({"timezone": "Mars/Olympus"})
    assert not bad.ok and "unknown time zone" in bad.content


@pytest.mark.slow
def test_the_local_model_completes_a_calculator_task(store: Store):
    gw = Gateway(settings=Settings(), store=store)
    a = Agent("local:qwen2.5-coder-0.5b", [calculator], gateway=gw, max_steps=4)
    result = a.run("What is 17.5% of 2,340?")
    assert result.status == "done"
    assert any(s.kind == "tool" and s.tool == "calculator" for s in result.steps)
    assert "409.5" in str(result.output)


# -- the CLI ---------------------------------------------------------------


@pytest.fixture
def cli_model(monkeypatch: pytest.MonkeyPatch, store: Store) -> TestModel:
    import io

    from outcrop.cli._common import Ctx

    model = TestModel()
    gw = Gateway(settings=Settings(default_model="test"), store=store, providers={"test": model})
    monkeypatch.setattr(Ctx, "gateway", property(lambda self: gw))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return model


def test_agent_command_shows_each_step(cli_model: TestModel, capsys):
    from .helpers import run

    cli_model.replies.extend([call("calculator", 1, expression="17.5% of 2,340"), "409.5"])
    code, out, err = run(capsys, "agent", "run", "What is 17.5% of 2,340?", "--tools", "calculator")
    assert code == 0, err
    assert out.splitlines() == [
        "→ calculator({'expression': '17.5% of 2,340'})",
        "← 409.5",
        "409.5",
    ]


def test_agent_command_tools_module_and_approval(cli_model: TestModel, capsys, tmp_path):
    from .helpers import run

    module = tmp_path / "my_tools.py"
    module.write_text(
        "from outcrop.agents import tool\n\n@tool(requires_approval=True)\n"
        'def send_note(to: str) -> str:\n    """Send a note."""\n    return \'sent to \' + to\n'
    )
    cli_model.replies.extend([call("send_note", 1, to="ada"), "Done."])
    code, out, err = run(
        capsys, "agent", "run", "note ada", "--tools", "", "--tools-module", str(module)
    )
    assert code == 0
    assert "needs approval; refused" in err  # no terminal to ask
    assert "refused" in out
    cli_model.replies.extend([call("send_note", 1, to="ada"), "Done."])
    code, out, _ = run(
        capsys,
        "agent",
        "run",
        "note ada",
        "--tools",
        "",
        "--tools-module",
        str(module),
        "--yes",
        "--json",
    )
    import json

    data = json.loads(out)
    assert data["status"] == "done"
    assert [s["text"] for s in data["steps"] if s["kind"] == "tool"] == ["sent to ada"]


def test_agent_command_bad_input(cli_model: TestModel, capsys, tmp_path):
    from .helpers import run

    code, _, err = run(capsys, "agent", "run", "x", "--tools", "nope")
    assert code == 1 and "Unknown tool 'nope'" in err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _, err = run(capsys, "agent", "run", "x", "--tools-module", str(empty))
    assert code == 1 and "defines no tools" in err
    code, _, err = run(capsys, "agent", "run", "x", "--tools", "kb:nothing")
    assert code == 1 and "No knowledge base named 'nothing'" in err


def test_knowledge_base_search_tool(gw: Gateway, tmp_path):
    from outcrop.agents import kb_search_tool
    from outcrop.rag import KnowledgeBase

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds reach your card within 5 days.\n")
    KnowledgeBase.create("handbook", gateway=gw).add(docs)
    search = kb_search_tool("handbook", gateway=gw)
    assert search.name == "search_handbook"
    result = search.invoke({"query": "how long do refunds take"})
    assert result.ok and result.content.startswith("[1] (refunds.md)")
    assert "5 days" in result.content


def test_agent_bad_input(gw: Gateway, capsys, cli_model: TestModel):
    from outcrop import InvalidRequestError

    from .helpers import run

    with pytest.raises(InvalidRequestError, match="task is empty"):
        Agent("test", [add], gateway=gw).run("  ")
    with pytest.raises(InvalidRequestError, match="same name"):
        Agent("test", [add, add], gateway=gw)
    code, _, err = run(capsys, "agent", "run", " ")
    assert code == 1 and "task is empty" in err


@pytest.mark.slow
def test_agent_command_on_the_real_local_model(capsys, monkeypatch):
    import io

    from .helpers import run

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(
        capsys,
        "agent",
        "run",
        "What is 17.5% of 2,340?",
        "--tools",
        "calculator",
        "-m",
        "local:qwen2.5-coder-0.5b",
        "--max-steps",
        "4",
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("→ calculator(")
    assert "409.5" in out.splitlines()[-1]
