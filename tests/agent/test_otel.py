"""OpenTelemetry spans of runs (GenAI semantic conventions), read back with the SDK's in-memory
exporter; the CLI's --otel against a local OTLP/HTTP collector stand-in and on stderr."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
from harmony_agent import Agent, instrument, tool, uninstrument
from harmony_agent.engine import ScriptedEngine
from harmony_agent.errors import ConfigurationError, ScriptExhaustedError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

pytestmark = pytest.mark.anyio

SCRIPT = [
    "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    '<|channel|>commentary to=functions.weather <|constrain|>json<|message|>{"city":"Nowhere"}<|call|>',
    "<|channel|>final<|message|>21 °C in Paris.<|return|>",
]


@tool
def weather(city: str) -> dict:
    """Current weather for a city."""
    if city == "Nowhere":
        raise ValueError("no such city")
    return {"city": city, "temp_c": 21}


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(exporter):
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_span_tree_and_attributes(spans):
    provider, exporter = spans
    agent = Agent(tools=[weather], engine=ScriptedEngine(SCRIPT), tracer_provider=provider)
    result = await agent.run("Weather in Paris?")
    finished = exporter.get_finished_spans()
    names = [s.name for s in finished]
    assert names.count("chat gpt-oss") == 3 and names.count("execute_tool functions.weather") == 2
    (run,) = [s for s in finished if s.name == "invoke_agent"]
    assert run.parent is None
    assert all(s.parent.span_id == run.context.span_id for s in finished if s is not run)
    assert {s.context.trace_id for s in finished} == {run.context.trace_id}
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.provider.name"] == "ScriptedEngine"
    assert run.attributes["gen_ai.conversation.id"] == result.run_id
    assert run.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert run.attributes["gen_ai.usage.output_tokens"] == result.usage.output_tokens
    assert run.status.status_code == StatusCode.UNSET

    chats = sorted((s for s in finished if s.name.startswith("chat")), key=lambda s: s.start_time)
    first = chats[0]
    assert first.kind == SpanKind.CLIENT
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "gpt-oss"
    turn0 = next(e for e in result.events if e.type == "turn_finished")
    assert first.attributes["gen_ai.usage.input_tokens"] == turn0.prompt_tokens
    assert first.attributes["gen_ai.usage.output_tokens"] == turn0.output_tokens
    assert tuple(first.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert first.start_time <= first.end_time
    # the chat spans and the tool spans follow each other in time
    tools = sorted(
        (s for s in finished if s.name.startswith("execute_tool")), key=lambda s: s.start_time
    )
    assert chats[0].end_time <= tools[0].start_time <= tools[0].end_time <= chats[1].end_time

    ok, failed = tools
    assert ok.attributes["gen_ai.tool.name"] == "functions.weather"
    assert ok.attributes["gen_ai.tool.call.id"] == result.tool_calls[0].call_id
    assert ok.attributes["gen_ai.operation.name"] == "execute_tool"
    assert ok.status.status_code == StatusCode.UNSET and ok.attributes["harmony_agent.tool.ok"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "tool_failed"
    assert "no such city" in failed.status.description
    # no content unless asked for
    for span in finished:
        assert not any(key.endswith(("messages", "arguments", "result")) for key in span.attributes)


async def test_cached_tokens_are_on_the_chat_spans(spans):
    provider, exporter = spans
    result = await Agent(
        tools=[weather], engine=ScriptedEngine(SCRIPT), tracer_provider=provider
    ).run("Weather?")
    turns = [e for e in result.events if e.type == "turn_finished"]
    chats = sorted(
        (s for s in exporter.get_finished_spans() if s.name.startswith("chat")),
        key=lambda s: s.start_time,
    )
    cached = [c.attributes["gen_ai.usage.cache_read.input_tokens"] for c in chats]
    assert cached == [t.cached_prompt_tokens for t in turns] and cached[1] > 0


async def test_content_only_when_opted_in(spans):
    provider, exporter = spans
    agent = Agent(
        tools=[weather], engine=ScriptedEngine(SCRIPT), tracer_provider=provider, trace_content=True
    )
    await agent.run("Weather in Paris?")
    finished = exporter.get_finished_spans()
    run = next(s for s in finished if s.name == "invoke_agent")
    task = json.loads(run.attributes["gen_ai.input.messages"])
    assert task == [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
    answer = json.loads(run.attributes["gen_ai.output.messages"])
    assert answer[0]["parts"][0]["content"] == "21 °C in Paris."
    chats = sorted((s for s in finished if s.name.startswith("chat")), key=lambda s: s.start_time)
    parts = json.loads(chats[0].attributes["gen_ai.output.messages"])[0]["parts"]
    assert {"type": "reasoning", "content": "Need the weather."} in parts
    tool_span = min(
        (s for s in finished if s.name.startswith("execute_tool")), key=lambda s: s.start_time
    )
    assert json.loads(tool_span.attributes["gen_ai.tool.call.arguments"]) == {"city": "Paris"}
    assert json.loads(tool_span.attributes["gen_ai.tool.call.result"]) == {
        "city": "Paris",
        "temp_c": 21,
    }


async def test_a_failed_run_has_an_error_status(spans):
    provider, exporter = spans
    agent = Agent(tools=[weather], engine=ScriptedEngine(SCRIPT[:1]), tracer_provider=provider)
    with pytest.raises(ScriptExhaustedError):
        await agent.run("Weather?")
    run = by_name(exporter)["invoke_agent"]
    assert run.status.status_code == StatusCode.ERROR
    assert run.attributes["error.type"] == "ScriptExhaustedError"
    assert "no reply left" in run.status.description


async def test_a_run_stopped_early_still_ends_its_span(spans):
    provider, exporter = spans
    agent = Agent(tools=[weather], engine=ScriptedEngine(SCRIPT), tracer_provider=provider)
    async with contextlib.aclosing(agent.stream("Weather?")) as events:
        async for event in events:
            if event.type == "tool_call":
                break
    run = by_name(exporter)["invoke_agent"]
    assert (
        run.status.status_code == StatusCode.ERROR and run.attributes["error.type"] == "cancelled"
    )
    tool_span = by_name(exporter)["execute_tool functions.weather"]
    assert tool_span.status.status_code == StatusCode.ERROR and tool_span.end_time is not None


async def test_instrument_turns_it_on_for_every_agent_and_off_again(spans):
    provider, exporter = spans
    agent = Agent(engine=ScriptedEngine(["<|channel|>final<|message|>a<|return|>"] * 2))
    instrument(provider, capture_content=True)
    try:
        await agent.run("one")
    finally:
        uninstrument()
    await agent.run("two")
    runs = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent"]
    assert len(runs) == 1 and "one" in runs[0].attributes["gen_ai.input.messages"]


async def test_off_by_default(spans):
    from harmony_agent import _otel

    agent = Agent(engine=ScriptedEngine(["<|channel|>final<|message|>a<|return|>"]))
    assert _otel.run_observer(agent) is None
    await agent.run("x")
    assert spans[1].get_finished_spans() == ()


def test_missing_otel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'harmony-agent\[otel\]'"):
        instrument()


FINAL = ["<|channel|>final<|message|>Hi there<|return|>"]
CLI = [sys.executable, "-m", "harmony_agent", "run", "hi", "--engine", "scripted:final.json"]
CLI += ["--no-browser", "--no-python", "--otel"]


def test_cli_otel_exports_to_an_otlp_http_collector(tmp_path):
    received: list[tuple[str, str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    (tmp_path / "final.json").write_text(json.dumps(FINAL))
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
        "OTEL_SERVICE_NAME": "otel-test",
    }
    try:
        proc = subprocess.run(
            CLI,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        collector.shutdown()
        collector.server_close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Hi there"
    assert received, "the collector got nothing"
    path, content_type, _ = received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    for text in (b"invoke_agent", b"chat gpt-oss", b"otel-test", b"gen_ai.usage.input_tokens"):
        assert text in b"".join(r[2] for r in received), text


def test_cli_otel_without_an_endpoint_writes_spans_to_stderr(tmp_path):
    (tmp_path / "final.json").write_text(json.dumps(FINAL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [*CLI, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"name": "invoke_agent"' in proc.stderr and '"name": "chat gpt-oss"' in proc.stderr
    assert '"service.name": "harmony-agent"' in proc.stderr
