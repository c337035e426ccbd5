"""OpenTelemetry spans for runs, following the GenAI semantic conventions.

Built as a consumer of the run's events (which already carry turns, tool calls, results,
usage and timings), so it does not depend on how the loop is written:

    invoke_agent                 one per run (gen_ai.conversation.id = run id)
    ├── chat {model}             one per model turn: usage, cached tokens, finish reason
    ├── execute_tool {tool}      one per tool call: name, call id, ok / error
    └── ...

Off unless enabled with :func:`instrument` or ``Agent(tracer_provider=...)``; nothing is sent
anywhere unless the provider you give exports it. Prompts, arguments, outputs and reasoning go
on the spans only when asked for (``capture_content=True``, ``Agent(trace_content=True)`` or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). Needs ``opentelemetry-api``
(``pip install 'harmony-agent[otel]'``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .events import (
    ErrorEvent,
    Event,
    PreambleDelta,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)

__all__ = ["RunObserver", "instrument", "run_observer", "uninstrument"]

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@dataclass
class _Settings:
    tracer_provider: Any = None
    capture_content: bool = False


_settings: _Settings | None = None


def _require_otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ConfigurationError(
            "tracing needs OpenTelemetry: pip install 'harmony-agent[otel]' "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return trace


def instrument(tracer_provider: Any = None, *, capture_content: bool = False) -> None:
    """Record every agent's runs as OpenTelemetry spans.

    ``tracer_provider``: where spans go (default: OpenTelemetry's global provider, which
    drops them until an SDK is configured). ``capture_content``: also record the task,
    arguments, tool outputs, reasoning and answers. ``Agent(tracer_provider=...)`` overrides
    this for one agent.
    """
    global _settings
    _require_otel()
    _settings = _Settings(tracer_provider, capture_content)


def uninstrument() -> None:
    """Stop recording runs (agents built with ``tracer_provider=`` keep theirs)."""
    global _settings
    _settings = None


def run_observer(agent: Any) -> RunObserver | None:
    """The observer for one run of ``agent``, or ``None`` when tracing is off."""
    provider = getattr(agent, "tracer_provider", None)
    if provider is None and _settings is None:
        return None
    trace = _require_otel()
    if provider is None:
        assert _settings is not None
        provider = _settings.tracer_provider
    content = getattr(agent, "trace_content", None)
    if content is None:
        content = (_settings.capture_content if _settings else False) or os.environ.get(
            CONTENT_ENV, ""
        ).lower() in ("1", "true", "yes")
    tracer = trace.get_tracer("harmony_agent", tracer_provider=provider)
    return RunObserver(tracer, agent, content)


_PROVIDERS = {"VLLMEngine": "vllm"}


def _ns(seconds_ago: float = 0.0) -> int:
    return time.time_ns() - int(seconds_ago * 1e9)


class RunObserver:
    """Turns one run's events into spans (sync: span calls do not block)."""

    def __init__(self, tracer: Any, agent: Any, capture_content: bool) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer
        self.capture = capture_content
        self.agent = agent
        self.run_span: Any = None
        self.tool_spans: dict[str, Any] = {}
        self._turn_text: dict[str, list[str]] = {}

    @property
    def model(self) -> str:
        # read each time: an HTTP engine learns its model from the server on first use
        return getattr(self.agent.engine, "model", None) or "gpt-oss"

    def _common(self, operation: str) -> dict[str, Any]:
        engine = self.agent.engine
        # the serving stack (vllm, fireworks, ...); the engine's class name for test doubles
        provider = getattr(engine, "flavor", None) or _PROVIDERS.get(
            type(engine).__name__, type(engine).__name__
        )
        return {"gen_ai.operation.name": operation, "gen_ai.provider.name": provider}

    def on_event(self, event: Event) -> None:
        trace = self._trace
        if isinstance(event, RunStarted):
            attrs = {
                **self._common("invoke_agent"),
                "gen_ai.conversation.id": event.run_id,
                "gen_ai.request.model": self.model,
                "harmony_agent.tools": list(event.tools),
            }
            if self.capture:
                attrs["gen_ai.input.messages"] = json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": event.task}]}],
                    ensure_ascii=False,
                )
            self.run_span = self.tracer.start_span(
                "invoke_agent", kind=trace.SpanKind.INTERNAL, attributes=attrs
            )
            return
        if self.run_span is None:
            return
        parent = trace.set_span_in_context(self.run_span)
        if isinstance(event, ReasoningDelta | PreambleDelta | TextDelta):
            if self.capture:
                self._turn_text.setdefault(event.type, []).append(event.delta)
        elif isinstance(event, TurnFinished):
            self._chat_span(event, parent)
        elif isinstance(event, ToolCallEvent):
            name = event.tool or event.recipient
            attrs = {
                **self._common("execute_tool"),
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": event.call_id,
                "gen_ai.tool.type": "function" if name.startswith("functions.") else "extension",
            }
            if self.capture:
                attrs["gen_ai.tool.call.arguments"] = event.raw_arguments
            self.tool_spans[event.call_id] = self.tracer.start_span(
                f"execute_tool {name}",
                context=parent,
                kind=trace.SpanKind.INTERNAL,
                attributes=attrs,
            )
        elif isinstance(event, ToolResultEvent):
            span = self.tool_spans.pop(event.call_id, None)
            if span is None:
                return
            span.set_attribute("harmony_agent.tool.ok", event.ok)
            if self.capture:
                span.set_attribute("gen_ai.tool.call.result", event.output)
            if not event.ok:
                span.set_attribute("error.type", event.error_kind or "tool_error")
                span.set_status(trace.Status(trace.StatusCode.ERROR, event.output[:500]))
            span.end()
        elif isinstance(event, WarningEvent):
            self.run_span.add_event("warning", {"message": event.message})
        elif isinstance(event, RunFinished):
            span = self.run_span
            span.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", event.output_tokens)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", event.cached_prompt_tokens)
            span.set_attribute("harmony_agent.turns", event.turns)
            if self.capture:
                span.set_attribute(
                    "gen_ai.output.messages",
                    json.dumps(
                        [
                            {
                                "role": "assistant",
                                "parts": [{"type": "text", "content": event.final_text}],
                            }
                        ],
                        ensure_ascii=False,
                    ),
                )
            span.end()
            self.run_span = None
        elif isinstance(event, ErrorEvent):
            span = self.run_span
            span.set_attribute("error.type", event.error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.message[:500]))
            span.end()
            self.run_span = None

    def _chat_span(self, event: TurnFinished, parent: Any) -> None:
        trace = self._trace
        agent = self.agent
        attrs: dict[str, Any] = {
            **self._common("chat"),
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": agent.max_tokens_per_turn,
            "gen_ai.usage.input_tokens": event.prompt_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "gen_ai.response.finish_reasons": [event.finish_reason],
            "gen_ai.conversation.id": event.run_id,
        }
        if event.cached_prompt_tokens is not None:
            attrs["gen_ai.usage.cache_read.input_tokens"] = event.cached_prompt_tokens
        for key, value in (
            ("gen_ai.request.temperature", agent.temperature),
            ("gen_ai.request.top_p", agent.top_p),
            ("gen_ai.request.seed", agent.seed),
        ):
            if value is not None:
                attrs[key] = value
        span = self.tracer.start_span(
            f"chat {self.model}",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attrs,
            start_time=_ns(event.duration_s),
        )
        if self.capture:
            parts = []
            for kind, part_type in (
                ("reasoning_delta", "reasoning"),
                ("preamble_delta", "text"),
                ("text_delta", "text"),
            ):
                if self._turn_text.get(kind):
                    parts.append({"type": part_type, "content": "".join(self._turn_text[kind])})
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [{"role": "assistant", "parts": parts, "finish_reason": event.finish_reason}],
                    ensure_ascii=False,
                ),
            )
            self._turn_text = {}
        if event.finish_reason == "abort":
            span.set_status(trace.Status(trace.StatusCode.ERROR, "the engine aborted the request"))
        span.end()

    def close(self) -> None:
        """End what is still open (a run stopped early, e.g. its stream was closed)."""
        trace = self._trace
        for span in self.tool_spans.values():
            span.set_status(trace.Status(trace.StatusCode.ERROR, "the run stopped"))
            span.end()
        self.tool_spans.clear()
        if self.run_span is not None:
            self.run_span.set_attribute("error.type", "cancelled")
            self.run_span.set_status(trace.Status(trace.StatusCode.ERROR, "the run was stopped"))
            self.run_span.end()
            self.run_span = None


def cli_tracer_provider() -> Any:
    """The SDK provider ``harmony-agent --otel`` records to: OTLP over HTTP when an
    ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is set (the exporter reads every other
    ``OTEL_EXPORTER_OTLP_*`` setting itself), else JSON spans on stderr. Spans are flushed
    when the process exits."""
    import sys

    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigurationError(
            "--otel needs the OpenTelemetry SDK: pip install opentelemetry-sdk "
            f"opentelemetry-exporter-otlp-proto-http ({exc})"
        ) from None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "harmony-agent"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        )
        if protocol != "http/protobuf":
            raise ConfigurationError(
                f"--otel exports OTLP over HTTP (http/protobuf), not {protocol!r}: set "
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point the endpoint at the "
                "collector's HTTP port (4318)"
            )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigurationError(
                "--otel with an OTLP endpoint needs the exporter: pip install "
                f"opentelemetry-exporter-otlp-proto-http ({exc})"
            ) from None
        exporter: Any = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
