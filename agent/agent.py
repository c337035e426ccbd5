"""The Agent: the token-exact Harmony loop.

    render prompt (ids) → engine samples ids → parse → tool call? → run tool →
    append tool result ids → sample again … → final answer

Within a run the prompt is append-only: the next prompt is the previous prompt, plus the ids
the model sampled (stop token included), plus the rendered tool message, plus
``<|start|>assistant``. Nothing is re-rendered, so the engine's prefix cache always hits and
the model sees exactly what it wrote. The loop itself, as named steps (sample → decide →
tool step / finish), is :class:`harmony_agent._run.Run`; this module is its public face.

Example::

    from harmony_agent import Agent, tool
    from harmony_agent.engine import ScriptedEngine

    @tool
    def get_weather(city: str) -> dict:
        "Current weather for a city."
        return {"city": city, "temp_c": 21}

    agent = Agent(
        instructions="Answer briefly.",
        tools=[get_weather],
        engine=ScriptedEngine([
            '<|channel|>analysis<|message|>Need the weather.<|end|>'
            '<|start|>assistant<|channel|>commentary to=functions.get_weather '
            '<|constrain|>json<|message|>{"city":"Paris"}<|call|>',
            "<|channel|>final<|message|>21 °C in Paris.<|return|>",
        ]),
    )
    result = agent.run_sync("Weather in Paris?")
    assert result.final_text == "21 °C in Paris."
    assert result.tool_calls[0].arguments == {"city": "Paris"}
    assert result.usage.turns == 2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import (
    ApprovalPolicy,
    RunContext,
    Tool,
    Toolset,
    check_approval_policy,
)
from openai_harmony import Conversation, Message, RenderConversationConfig, Role

from . import _harmony as hm
from ._agent_support import (
    OnEvent,
    RunStream,
    check_engine,
    check_resume,
    checked,
    close_toolsets,
    open_run_context,
)
from ._agent_support import compaction_policy as _compaction
from ._agent_support import declared as _declared
from ._agent_support import finish as _finish
from ._agent_support import fractions as _fractions
from ._agent_support import positive as _positive
from ._agent_support import recorder as _recorder
from ._agent_support import retries as _retries
from ._checks import (
    check_adapter,
    check_agent_arguments,
    check_history,
    check_no_running_loop,
    check_task,
)
from ._context import DEFAULT_WARNINGS, Compaction
from ._encoding import load_encoding
from ._hooks import Approver, Decision, Hooks, UsageLimits
from ._output import OutputSpec, output_spec, response_formats_text
from ._registry import ToolRegistry
from ._run import Run
from ._state import Recorder, RunState
from .errors import ConfigurationError
from .result import RunResult

__all__ = ["Agent", "Recorder", "RunState", "RunStream"]


class Agent:
    """A gpt-oss agent: instructions, tools and an engine.

    Args:
        instructions: developer instructions (the developer message).
        tools: ``@tool`` functions, ``Tool`` instances and toolsets (``BrowserTool``, ``PythonTool``).
        engine: where tokens come from (``VLLMEngine``, ``OpenAICompatibleEngine``, ``ScriptedEngine``).
        reasoning_effort: ``"low"``, ``"medium"`` or ``"high"`` (system message).
        max_turns: model turns per run before :class:`MaxTurnsError`.
        max_tokens_per_turn: sampling limit of one turn (clamped to the context left).
        max_tool_errors: consecutive failed tool calls before :class:`ToolErrorBudgetError`.
        temperature, top_p, seed: sampling; ``None`` leaves the engine's default.
        adapter: the LoRA adapter to sample with, by name (``None``: the base model). The
            engine must serve it: ``VLLMEngine(lora_adapters={name: path})``, a vLLM server
            started with ``--lora-modules name=path``, a Fireworks fine-tuned model path, or a
            llama-server ``--lora`` file. A run may set its own (``agent.run(task,
            adapter=...)``); a resumed run keeps the one its state records.
        model_identity, knowledge_cutoff, conversation_start_date: system message fields;
            the date defaults to today.
        context_window: tokens the model can attend to (default: the engine's, else 131,072).
        compaction: how the run compacts its context when it fills (:class:`Compaction`);
            default: ``Compaction()`` when the agent has tools, none otherwise; ``False``
            turns it off (a full context then ends the run with ``ContextOverflowError``).
        max_reasoning_tokens: reasoning (analysis) tokens one turn may write; at the limit
            the runtime closes the analysis and opens the final channel for the model to
            answer in (also when ``max_tokens_per_turn`` is hit while reasoning). ``None``:
            no limit. A run may set its own (``agent.run(task, max_reasoning_tokens=...)``).
        context_warnings: fractions of the window at which a run warns, once each.
        files_dir: where tools put files (screenshots, sandbox outputs); a temporary
            directory per run when None.
        tracer_provider: an OpenTelemetry ``TracerProvider`` to record runs to (GenAI
            semantic conventions); default: the one :func:`harmony_agent.instrument` set, if any.
        trace_content: put prompts, arguments, outputs and reasoning on the spans (default:
            what :func:`harmony_agent.instrument` said; off).
        output_type: the answer's type: a pydantic model, dataclass, TypedDict, a type such
            as ``int`` or ``list[str]``, or a JSON schema dict. The developer message gets a
            ``# Response Formats`` section, engines that can hold the final channel to the
            schema do, and ``RunResult.output`` is the validated value (a run may set its
            own: ``agent.run(task, output_type=...)``).
        output_retries: answers that fail validation the model may correct (each gets a
            message naming the path and the reason) before :class:`OutputValidationError`.

    Toolsets that hold connections (MCP servers) share one per server across runs inside
    ``async with agent:`` (or until ``await agent.aclose()``); a run outside it connects
    for itself and disconnects when it ends.
        usage_limits: :class:`UsageLimits` for every run (a run's own limits override them
            field by field).
        hooks: :class:`Hooks` for every run (a run's own hooks replace the ones they set).
        needs_approval: an approval policy for every tool call (``True``, or a callable
            ``(ctx, call) -> bool``), on top of each tool's own ``needs_approval``.
    """

    #: the rendered system and developer messages (None: render them again)
    _prefix: list[int] | None = None
    #: what ``async with agent:`` holds across runs: its exit stack and task group
    _lifetime: AsyncExitStack | None = None
    _lifetime_tg: anyio.abc.TaskGroup | None = None

    def __init__(
        self,
        instructions: str | None = None,
        *,
        tools: Sequence[Tool | Toolset] = (),
        engine: Engine,
        reasoning_effort: hm.Effort = "medium",
        max_turns: int = 30,
        max_tokens_per_turn: int = 8192,
        max_tool_errors: int = 5,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        adapter: str | None = None,
        model_identity: str | None = None,
        knowledge_cutoff: str | None = "2024-06",
        conversation_start_date: str | None = None,
        context_window: int | None = None,
        compaction: Compaction | bool | None = None,
        max_reasoning_tokens: int | None = None,
        context_warnings: Sequence[float] = DEFAULT_WARNINGS,
        files_dir: str | Path | None = None,
        tracer_provider: Any = None,
        trace_content: bool | None = None,
        output_type: Any = None,
        output_retries: int = 1,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        needs_approval: ApprovalPolicy = False,
    ) -> None:
        check_engine(engine, reasoning_effort)
        check_agent_arguments(
            instructions=instructions,
            tools=tools,
            max_turns=max_turns,
            max_tokens_per_turn=max_tokens_per_turn,
            max_tool_errors=max_tool_errors,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            context_window=context_window,
        )
        self.instructions, self.engine = instructions, engine
        self._tool_items = list(tools)
        self.registry = ToolRegistry(self._tool_items)
        self.settings = hm.PromptSettings(
            reasoning_effort, model_identity, knowledge_cutoff, conversation_start_date
        )
        self.max_turns, self.max_tool_errors = max_turns, max_tool_errors
        self.max_tokens_per_turn = max_tokens_per_turn
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.adapter = check_adapter(adapter)
        self.context_window = context_window
        self.output_retries = _retries(output_retries)
        self.output: OutputSpec | None = None if output_type is None else output_spec(output_type)
        self.compaction = _compaction(compaction, bool(self.registry.tools))
        self.max_reasoning_tokens = _positive("max_reasoning_tokens", max_reasoning_tokens)
        self.context_warnings = _fractions(context_warnings)
        self.files_dir = Path(files_dir) if files_dir is not None else None
        self.usage_limits = checked("usage_limits", usage_limits, UsageLimits) or UsageLimits()
        self.hooks = checked("hooks", hooks, Hooks) or Hooks()
        self.needs_approval = check_approval_policy(needs_approval, "the agent")
        self.encoding = load_encoding()
        self.tracer_provider, self.trace_content = tracer_provider, trace_content

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        if self._lifetime is not None:
            raise ConfigurationError("this agent is already entered (async with agent: ...)")
        stack = AsyncExitStack()
        self._lifetime_tg = await stack.enter_async_context(anyio.create_task_group())
        self._lifetime = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close what the tools keep across runs (MCP connections, their subprocesses)."""
        stack, self._lifetime, self._lifetime_tg = self._lifetime, None, None
        await close_toolsets(self.registry.toolsets, stack)

    def run_context(self, run_id: str, deps: Any) -> AbstractAsyncContextManager[RunContext]:
        """The context of one run, its toolsets prepared (tools listed) before the prompt is
        rendered. Connections live in the agent's task group inside ``async with agent:``,
        else in the run's own."""
        return open_run_context(
            run_id, deps, self.files_dir, self._lifetime_tg, prepare=self._prepare_tools
        )

    async def _prepare_tools(self, ctx: RunContext) -> None:
        """Let toolsets list their tools before the prompt is rendered; re-declare on change."""
        for toolset in self.registry.toolsets:
            await toolset.prepare(ctx)
        if self.registry.toolsets:
            registry = ToolRegistry(self._tool_items)
            if list(registry.tools.values()) != list(self.registry.tools.values()):
                if _declared(registry) != _declared(self.registry):
                    self._prefix = None  # the developer message changes
                self.registry = registry

    # --- prompts ---------------------------------------------------------------------------

    def initial_messages(
        self, task: str, history: RunResult | None = None, output: OutputSpec | None = None
    ) -> list[Message]:
        """The conversation the first prompt of a run renders (``output``: the run's own
        output type, when it overrides the agent's)."""
        user = Message.from_role_and_content(Role.USER, task)
        if history is not None:
            return [*hm.drop_stale_analysis(history.messages), user]
        messages = [hm.build_system_message(self.settings, self.registry.namespaces)]
        output = output or self.output
        formats = None
        if output is not None:
            before = bool(self.instructions or self.registry.functions)
            formats = response_formats_text(output, after_other_content=before)
        developer = hm.build_developer_message(self.instructions, self.registry.functions, formats)
        if developer is not None:
            messages.append(developer)
        messages.append(user)
        return messages

    def first_prompt(self, task: str, output: OutputSpec | None = None) -> list[int]:
        """The first prompt of a new run: the system and developer messages (rendered once
        per agent) followed by the user's task and ``<|start|>assistant``. A run's own
        ``output`` type renders its own developer message."""
        if output is not None and output is not self.output:
            prefix = self._render_head(output)
        else:
            if self._prefix is None:
                self._prefix = self._render_head(None)
            prefix = self._prefix
        return [
            *prefix,
            *hm.render_user(self.encoding, task),
            *hm.assistant_start_ids(self.encoding),
        ]

    def _render_head(self, output: OutputSpec | None) -> list[int]:
        head = self.initial_messages("", output=output)[:-1]
        return hm.guard_render(
            "the system and developer messages",
            self.encoding.render_conversation,
            Conversation.from_messages(head),
            RenderConversationConfig(auto_drop_analysis=False),
        )

    def _output_for(self, output_type: Any) -> OutputSpec | None:
        """A run's output type: its own, else the agent's (None: inherit)."""
        return None if output_type is None else output_spec(output_type)

    # --- running ---------------------------------------------------------------------------

    def _run(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        resume: RunState | None = None,
        approve: Mapping[str, Decision] | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        approver: Approver | None = None,
        max_reasoning_tokens: int | None = None,
        output_type: Any = None,
        adapter: str | None = None,
    ) -> Run:
        check_task(task)
        check_history(history)
        decisions: dict[str, Decision] = {}
        if history is not None and history.status == "paused":
            raise ConfigurationError(
                "this history is a run paused for approval of a tool call; resume it with "
                "agent.resume(result.state, approve={call_id: True | False | 'reason'}) and "
                "continue the conversation from that result"
            )
        if resume is not None:
            decisions = self._check_resume(resume, approve)
        return Run(
            self,
            task,
            history,
            deps,
            resume=resume,
            recorder=_recorder(trace),
            hooks=self.hooks.merged(hooks),
            limits=self.usage_limits.merged(usage_limits),
            approval=self.needs_approval,
            approver=approver,
            max_reasoning_tokens=_positive("max_reasoning_tokens", max_reasoning_tokens),
            output=self._output_for(output_type),
            decisions=decisions,
            adapter=check_adapter(adapter),
        )

    def stream(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        approver: Approver | None = None,
        max_reasoning_tokens: int | None = None,
        output_type: Any = None,
        adapter: str | None = None,
    ) -> RunStream:
        """Run and yield events as they happen; the last is ``RunFinished``, ``RunPaused`` or
        ``ErrorEvent``. Once iterated to the end, the stream's ``result`` is the
        :class:`RunResult` (pass it as ``history=`` to go on with the conversation)::

            async with agent.stream(task) as stream:
                async for event in stream:
                    ...
            result = stream.result

        Errors that end the run are raised after their ``ErrorEvent``. Leaving the ``async
        with`` (or ``aclose()``) stops the run early; the engine request is aborted and the
        run's tools are closed. Arguments as for :meth:`run`.
        """
        return RunStream(
            self._run(
                task,
                history=history,
                deps=deps,
                trace=trace,
                usage_limits=usage_limits,
                hooks=hooks,
                approver=approver,
                max_reasoning_tokens=max_reasoning_tokens,
                output_type=output_type,
                adapter=adapter,
            )
        )

    async def run(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: OnEvent | None = None,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        approver: Approver | None = None,
        max_reasoning_tokens: int | None = None,
        output_type: Any = None,
        adapter: str | None = None,
    ) -> RunResult:
        """Run ``task`` to its final answer (or to a pause, when a call needs approval).

        ``history``: a previous result to continue the conversation (its analysis before the
        last final answer is dropped, as the Harmony format prescribes). ``deps`` is handed to
        tools as ``ctx.deps``. ``trace``: a file to write the run to as JSON lines, one record
        per event and per step, fsynced per step (see :mod:`harmony_agent.trace`).
        ``on_event``: called with every event as it happens (sync or async), e.g. to show
        progress while still getting the whole result. ``usage_limits`` and ``hooks``: this
        run's, over the agent's. ``approver(ctx, call)``: decides calls that need approval
        (True, False, or a reason to decline) as they come, instead of pausing the run.
        ``adapter``: this run's LoRA adapter, over the agent's.

        A call that needs approval, with no ``approver``, pauses the run: the result's
        ``status`` is ``"paused"``, its ``interruptions`` the waiting calls, and
        ``result.state`` goes to :meth:`resume`. An error that ends the run carries the run so
        far in ``exc.result``.
        """
        run = self._run(
            task,
            history=history,
            deps=deps,
            trace=trace,
            usage_limits=usage_limits,
            hooks=hooks,
            approver=approver,
            max_reasoning_tokens=max_reasoning_tokens,
            output_type=output_type,
            adapter=adapter,
        )
        return await _finish(run, on_event)

    def run_sync(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: OnEvent | None = None,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        approver: Approver | None = None,
        max_reasoning_tokens: int | None = None,
        output_type: Any = None,
        adapter: str | None = None,
    ) -> RunResult:
        """:meth:`run` for synchronous code (starts its own event loop)."""
        check_no_running_loop("run_sync")
        return anyio.run(
            lambda: self.run(
                task,
                history=history,
                deps=deps,
                trace=trace,
                on_event=on_event,
                usage_limits=usage_limits,
                hooks=hooks,
                approver=approver,
                max_reasoning_tokens=max_reasoning_tokens,
                output_type=output_type,
                adapter=adapter,
            )
        )

    def resume_stream(
        self,
        state: RunState,
        *,
        approve: Mapping[str, Decision] | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        approver: Approver | None = None,
        adapter: str | None = None,
    ) -> RunStream:
        """Go on with a run from ``state`` (a paused result's ``state``, ``RunState.from_json``
        or ``load_trace(path).resume_state()``); events as :meth:`stream`.

        ``approve`` decides each call a paused state waits on: ``{call_id: True}`` runs it,
        ``False`` or a reason declines it (the model reads that the user declined). The state
        is checked first, and nothing runs when it does not fit: decisions for calls it does
        not wait on (or none for one it does), or an agent whose prompt differs from the one
        that made the state (other instructions, tools or settings): :class:`RunStateError`.
        The run samples with the LoRA adapter the state records unless ``adapter`` names
        another (then the agent's, when the state has none).
        """
        return RunStream(
            self._run(
                state.task if isinstance(state, RunState) else "",
                resume=state,
                approve=approve,
                deps=deps,
                trace=trace,
                usage_limits=usage_limits,
                hooks=hooks,
                approver=approver,
                adapter=adapter,
            )
        )

    async def resume(
        self,
        state: RunState,
        *,
        approve: Mapping[str, Decision] | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: OnEvent | None = None,
        usage_limits: UsageLimits | None = None,
        hooks: Hooks | None = None,
        approver: Approver | None = None,
        adapter: str | None = None,
    ) -> RunResult:
        """:meth:`resume_stream` to the final answer (or the next pause).

        Example::

            import anyio
            from harmony_agent import Agent, RunState, tool
            from harmony_agent.engine import ScriptedEngine

            @tool(needs_approval=True)
            def pay(amount: int) -> str:
                "Pay an amount."
                return f"paid {amount}"

            call = ('<|channel|>commentary to=functions.pay <|constrain|>json'
                    '<|message|>{"amount":5}<|call|>')
            done = "<|channel|>final<|message|>Paid.<|return|>"
            agent = Agent(tools=[pay], engine=ScriptedEngine([call, done]),
                          conversation_start_date="2026-01-01")
            paused = agent.run_sync("pay 5")
            assert paused.status == "paused" and paused.interruptions[0].arguments == {"amount": 5}
            saved = paused.state.to_json()                 # keep it anywhere

            again = Agent(tools=[pay], engine=ScriptedEngine([done]),
                          conversation_start_date="2026-01-01")
            state = RunState.from_json(saved)
            result = anyio.run(lambda: again.resume(state, approve={state.pending[0].call_id: True}))
            assert result.final_text == "Paid." and result.tool_calls[0].output == "paid 5"
        """
        run = self._run(
            state.task if isinstance(state, RunState) else "",
            resume=state,
            approve=approve,
            deps=deps,
            trace=trace,
            usage_limits=usage_limits,
            hooks=hooks,
            approver=approver,
            adapter=adapter,
        )
        return await _finish(run, on_event)

    def _check_resume(
        self, state: RunState, approve: Mapping[str, Decision] | None
    ) -> dict[str, Decision]:
        """The decisions for ``state``'s pending calls, after checking that this agent renders
        the prompt the state extends; :class:`RunStateError` saying what differs."""
        return check_resume(
            state,
            approve,
            settings=self.settings,
            registry=self.registry,
            instructions=self.instructions,
            encoding=self.encoding,
        )
