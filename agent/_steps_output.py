"""The output steps of a run: the answer (``Finish``), its repair when it does not match
the output type (``RepairOutput``), and sampling again when the output did not parse
(``Resample``)."""

from __future__ import annotations

from typing import Any

from openai_harmony import Message, Role

from . import _harmony as hm
from ._output import repair_message
from ._steps_base import RunCore, Steps
from ._tokens import END, ENDOFTEXT, RETURN
from ._turn import Finish, RepairOutput, Resample, Sampled, final_text
from .errors import OutputValidationError, ToolErrorBudgetError
from .events import RunFinished, WarningEvent
from .result import RunResult


class OutputSteps(RunCore):
    """:meth:`finish`, :meth:`repair` and :meth:`resample`, mixed into ``Run``."""

    # --- finish: this turn's messages are the answer -------------------------------------

    async def finish(self, step: Finish) -> Steps:
        """The answer: :attr:`result` and ``RunFinished``."""
        sampled = step.sampled
        self.messages.extend(sampled.messages)
        text, warning = final_text(sampled, self.agent.max_tokens_per_turn)
        if warning:
            yield WarningEvent(run_id=self.run_id, turn=self.turn, message=warning)
        self.result = self._result(sampled, text, step.output)
        yield RunFinished(
            run_id=self.run_id,
            turn=self.turn,
            final_text=text,
            turns=self.usage.turns,
            prompt_tokens=self.usage.prompt_tokens,
            cached_prompt_tokens=self.usage.cached_prompt_tokens,
            output_tokens=self.usage.output_tokens,
            output=None if self.output is None else self.output.to_json(step.output),
        )

    def _result(self, sampled: Sampled, text: str, output: Any) -> RunResult:
        return RunResult(
            run_id=self.run_id,
            final_text=text,
            tool_calls=self.calls,
            usage=self.usage,
            events=self.events_seen,
            messages=self.messages,
            prompt_ids=sampled.prompt.tolist(),
            token_ids=[*sampled.prompt, *sampled.output],
            finish_reason=sampled.finish_reason,
            truncated=sampled.finish_reason == "length",
            output=output,
        )

    # --- repair: the answer does not match the output type -------------------------------

    async def repair(self, step: RepairOutput) -> Steps:
        """Tell the model what is wrong with its answer and let it answer again: the sampled
        ids and a user message are appended (nothing is re-rendered, the prefix stays cached).
        Past ``output_retries``: :class:`OutputValidationError` with the run so far."""
        spec, sampled, error = self.output, step.sampled, step.error
        if spec is None:  # decide() repairs only runs with an output type
            raise RuntimeError("a repair step in a run without an output type")
        self.messages.extend(sampled.messages)
        if self.output_repairs >= self.agent.output_retries:
            raise OutputValidationError(
                f"the answer does not match {spec.name} at {error.where}: {error.reason} "
                f"(after {self.output_repairs} repair turns). Raise output_retries, make the "
                "instructions say what each field holds, or use an engine that constrains "
                "decoding (vLLM, SGLang, llama-server, LlamaCppEngine).",
                result=self._result(sampled, step.text, None),
                where=error.where,
                reason=error.reason,
            )
        self.output_repairs += 1
        yield WarningEvent(
            run_id=self.run_id,
            turn=self.turn,
            message=(
                f"the answer does not match {spec.name} ({error}); asking the model to correct "
                f"it ({self.output_repairs}/{self.agent.output_retries})"
            ),
        )
        text = repair_message(spec, error)
        self.messages.append(Message.from_role_and_content(Role.USER, text))
        # a finished answer is stored with <|end|>, as harmony renders it in a conversation
        output = list(sampled.output)
        if output and output[-1] in (RETURN, ENDOFTEXT):
            output[-1] = END
        appended = [
            *hm.render_user(self.agent.encoding, text),
            *hm.assistant_start_ids(self.agent.encoding),
        ]
        self.transcript.extend(output)
        self.transcript.extend(appended)
        if self.recorder is not None:
            await self.recorder.step(self.state(self.turn + 1), output, appended)

    def _unconstrained_warning(self) -> WarningEvent:
        engine = type(self.agent.engine).__name__
        return WarningEvent(
            run_id=self.run_id,
            turn=self.turn,
            message=(
                f"{engine} cannot constrain decoding to the output type; the answer is held "
                "to it by the prompt's response format and validation only"
            ),
        )

    # --- resample: the output did not parse ----------------------------------------------

    async def resample(self, step: Resample) -> Steps:
        """Warn and go round again, within the error budget (the next sample is the same
        prompt; nothing is appended)."""
        self.consecutive_errors += 1
        yield WarningEvent(
            run_id=self.run_id,
            turn=self.turn,
            message=f"unparseable model output, sampling the turn again: {step.reason}",
        )
        if self.consecutive_errors >= self.agent.max_tool_errors:
            raise ToolErrorBudgetError(
                f"the model's output could not be parsed {self.consecutive_errors} times in a "
                f"row (last: {step.reason}). Sample with temperature > 0 or check the "
                "engine's output."
            )
