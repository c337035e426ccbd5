"""Every error harmony-agent raises or reports, in one hierarchy.

Two families. Errors the **model** sees are never raised out of a run: they become the text of
a tool message and the run goes on (within ``Agent(max_tool_errors=...)``). Errors the
**caller** sees end the run and are raised from ``Agent.run`` (and reported as an
``ErrorEvent`` by ``Agent.stream`` before it raises).

    HarmonyAgentError
    ├── ToolError                       model-visible: becomes a tool message
    │   ├── UnknownToolError            recipient names no declared tool
    │   ├── ToolArgumentsError          arguments are not JSON, or violate the schema
    │   ├── ToolExecutionError          the tool raised
    │   ├── ToolTimeoutError            the tool ran past its timeout
    │   └── ToolPolicyError             a tool refused on policy (a blocked URL, ...)
    └── RunError                        caller-visible: ends the run
        ├── ConfigurationError          bad settings, missing optional dependency
        │   ├── EncodingUnavailableError   the Harmony vocabulary cannot be loaded
        │   └── RunStateError           a saved run state is corrupt, foreign, or does not
        │                               fit the agent or the decisions given to resume it
        ├── EngineError                 the engine failed
        │   ├── EngineUnavailableError  unreachable, refused, not installed, no device
        │   ├── EngineRequestError      the engine rejected the request (4xx, bad model)
        │   ├── EngineTimeoutError      no first token / stalled between tokens / turn too long
        │   ├── EngineProtocolError     the engine answered outside the protocol (bad ids, ...)
        │   └── ScriptExhaustedError    a ScriptedEngine ran out of replies
        ├── MaxTurnsError               the model kept calling tools past max_turns
        ├── ToolErrorBudgetError        too many tool errors in a row
        ├── ContextOverflowError        the prompt no longer fits the context window
        ├── PromptRenderError           a message could not be rendered as tokens
        ├── OutputTruncatedError        a turn hit max_tokens before any answer
        ├── UsageLimitExceeded          a UsageLimits figure was reached
        ├── HookError                   a hook or an approval policy raised
        ├── RunStoppedError             on_turn_end asked the run to stop
        └── OutputValidationError       the answer did not match output_type, repairs spent

An error that ends a run carries what the run did up to then in ``result`` (a ``RunResult``
whose ``status`` is ``"error"``: messages, tool calls, usage, events, token ids); it is
``None`` for errors raised before a run starts.

Third-party exceptions (httpx, vllm, playwright, openai_harmony) are mapped to these at the
adapter that calls them, so callers only ever need ``except HarmonyAgentError``.

An error may name the settings that fix it in ``settings`` (their Python names: ``model``,
``base_url``, ...); messages speak of the library's own parameters, and a front end such as
the CLI adds its option for each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import RunResult

__all__ = [
    "ConfigurationError",
    "ContextOverflowError",
    "EncodingUnavailableError",
    "EngineError",
    "EngineProtocolError",
    "EngineRequestError",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "HarmonyAgentError",
    "HookError",
    "MaxTurnsError",
    "OutputTruncatedError",
    "OutputValidationError",
    "PromptRenderError",
    "RunError",
    "RunStateError",
    "RunStoppedError",
    "ScriptExhaustedError",
    "ToolArgumentsError",
    "ToolError",
    "ToolErrorBudgetError",
    "ToolExecutionError",
    "ToolPolicyError",
    "ToolTimeoutError",
    "UnknownToolError",
    "UsageLimitExceeded",
]


class HarmonyAgentError(Exception):
    """Base of every error this package raises."""

    #: the settings (Python parameter names) to change to fix this; empty when none applies
    settings: tuple[str, ...] = ()
    #: the partial run, set on an error that ended one (see the module docstring)
    result: RunResult | None = None


# --- errors the model sees -------------------------------------------------------------------


class ToolError(HarmonyAgentError):
    """A tool call failed; the message is what the model reads in the tool message."""

    kind = "tool_error"


class UnknownToolError(ToolError):
    kind = "unknown_tool"


class ToolArgumentsError(ToolError):
    kind = "invalid_arguments"


class ToolExecutionError(ToolError):
    kind = "tool_failed"


class ToolTimeoutError(ToolError):
    kind = "timeout"


class ToolPolicyError(ToolError):
    kind = "blocked"


# --- errors the caller sees ------------------------------------------------------------------


class RunError(HarmonyAgentError):
    """The run cannot go on."""


class ConfigurationError(RunError):
    """Settings are wrong or an optional part is missing."""


class EncodingUnavailableError(ConfigurationError):
    """The Harmony (o200k) vocabulary could not be loaded."""


class RunStateError(ConfigurationError, ValueError):
    """A run state cannot be resumed: not JSON, not a run state, a malformed field, another
    agent's state, or approval decisions for calls the state is not waiting on."""


class EngineError(RunError):
    """The inference engine failed."""


class EngineUnavailableError(EngineError):
    """The engine cannot be reached or started."""


class EngineRequestError(EngineError):
    """The engine rejected the request."""


class EngineTimeoutError(EngineError):
    """The engine did not answer in time."""


class EngineProtocolError(EngineError):
    """The engine answered outside the protocol: not JSON, bad token ids, too many tokens."""


class ScriptExhaustedError(EngineError):
    """A ScriptedEngine was asked for more replies than it was given."""


class MaxTurnsError(RunError):
    """The run reached max_turns without a final answer."""


class ToolErrorBudgetError(RunError):
    """Tool calls failed too many times in a row."""


class ContextOverflowError(RunError):
    """The next prompt does not fit the model's context window, even compacted.

    ``filled`` says what filled it, in tokens by kind (``"tool output: browser.open"``,
    ``"reasoning"``, ``"system and developer messages"``, ...), largest first.
    """

    def __init__(self, message: str, *, filled: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.filled: dict[str, int] = dict(filled or {})


class PromptRenderError(RunError):
    """openai_harmony could not render a message (the task, instructions, history) as tokens."""


class OutputTruncatedError(RunError):
    """A turn stopped on max_tokens before producing an answer or a complete tool call."""


class UsageLimitExceeded(RunError):
    """A figure of ``UsageLimits`` was reached: ``limit`` names it, ``value`` is the figure
    the run reached and ``maximum`` the limit."""

    settings = ("usage_limits",)

    def __init__(self, message: str, *, limit: str, value: Any, maximum: Any) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum


class HookError(RunError):
    """A hook (``before_tool_call``, ``after_tool_call``, ``on_turn_end``), an approval policy
    or an approver raised; ``hook`` names it and the exception is chained."""

    def __init__(self, message: str, *, hook: str) -> None:
        super().__init__(message)
        self.hook = hook


class RunStoppedError(RunError):
    """``on_turn_end`` returned ``StopRun``: the run ended early, at its caller's request."""


class OutputValidationError(RunError):
    """The final answer did not match the run's ``output_type``, after ``output_retries``
    repair turns. ``result`` is the run so far (``final_text``: the last answer, ``output``:
    None); ``where`` and ``reason`` say what was wrong with it."""

    def __init__(self, message: str, *, result: RunResult, where: str, reason: str) -> None:
        super().__init__(message)
        self.result = result
        self.where = where
        self.reason = reason
