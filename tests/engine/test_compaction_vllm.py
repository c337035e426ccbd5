"""Compaction and the reasoning budget on the real vLLM CPU build (a tiny random gpt-oss with
planted chains, a 4,096-token window). Runs in the vLLM environment: ``make test-vllm``."""

from __future__ import annotations

from contextlib import aclosing
from typing import ClassVar

import pytest
from harmony_agent import Agent, Compaction, tool
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import CHANNEL, MESSAGE, RETURN, START
from harmony_agent.errors import MaxTurnsError

from .tiny_gptoss import ASSISTANT, build
from .vllm_server import CPU_ARGS

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ENC = load_encoding()
WINDOW = 4096
BLOCK = 128  # vLLM's KV block on CPU: the prefix cache reuses whole blocks


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def recording(model: str):
    from harmony_agent.engine.vllm import VLLMEngine

    class Recording(VLLMEngine):
        prompts: ClassVar[list[list[int]]] = []

        async def generate(self, request):
            self.prompts.append(list(request.prompt_ids))
            async with aclosing(super().generate(request)) as chunks:
                async for chunk in chunks:
                    yield chunk

    Recording.prompts = []
    return Recording(model, **{**CPU_ARGS, "max_model_len": WINDOW, "enable_prefix_caching": True})


@tool
def lookup(city: str) -> str:
    """Everything known about a city."""
    return f"{city}: " + " ".join(f"fact{i} about the fjord and the harbour" for i in range(40))


@pytest.mark.anyio
async def test_a_compacted_prompt_is_accepted_and_cached_again(tiny_model):
    engine = recording(str(tiny_model))  # its planted chain calls lookup on every turn
    await engine.start()
    try:
        agent = Agent(
            "Look things up.",
            tools=[lookup],
            engine=engine,
            temperature=0.0,
            max_turns=24,
            max_tokens_per_turn=64,
            compaction=Compaction(keep_recent=3),
            conversation_start_date="2026-01-01",
        )
        events = []
        with pytest.raises(MaxTurnsError):  # the chain never answers
            async for event in agent.stream("Tell me about Oslo."):
                events.append(event)
    finally:
        await engine.aclose()
    compactions = [e for e in events if e.type == "compacted"]
    turns = {e.turn: e for e in events if e.type == "turn_finished"}
    assert compactions, "the run never filled the window"
    print(
        "compactions:",
        [(c.turn, c.tokens_before, c.tokens_after) for c in compactions],
        "cached per turn:",
        [(t, e.prompt_tokens, e.cached_prompt_tokens) for t, e in turns.items()],
    )
    for c in compactions:
        assert c.tokens_before > agent.compaction.limit(WINDOW, 64) >= c.tokens_after
        after = turns[c.turn]  # vLLM accepted the compacted prompt and answered it
        assert after.prompt_tokens == c.tokens_after and after.finish_reason == "stop"
        nxt = turns.get(c.turn + 1)
        if nxt is not None:  # the turn after appends: the compacted prompt is a cache hit
            assert nxt.cached_prompt_tokens >= (c.tokens_after // BLOCK) * BLOCK
    assert all(len(p) <= WINDOW for p in engine.prompts)
    assert sum(1 for e in events if e.type == "tool_result" and e.ok) == len(turns)


THOUGHT = list(range(3000, 3024))  # 24 planted "reasoning" ids, then <|return|>


@pytest.mark.anyio
async def test_the_reasoning_budget_ends_in_an_answer_on_vllm(tmp_path):
    # after <|start|>assistant the model opens analysis and writes THOUGHT, then <|return|>:
    # without a budget its only message is reasoning; with one it answers in the final channel
    analysis = ENC.encode("analysis", disallowed_special=())
    chain = [ASSISTANT, CHANNEL, *analysis, MESSAGE, *THOUGHT, RETURN]
    engine = recording(str(build(tmp_path, [chain])))
    await engine.start()
    try:
        agent = Agent(engine=engine, temperature=0.0, conversation_start_date="2026-01-01")
        plain = await agent.run("Think.")
        events = []
        budgeted = await agent.run("Think.", max_reasoning_tokens=8, on_event=events.append)
    finally:
        await engine.aclose()
    assert plain.usage.turns == 1 and plain.messages[-1].channel == "analysis"
    assert any(
        "without a final-channel message" in e.message for e in plain.events if e.type == "warning"
    )
    (forced,) = [e for e in events if e.type == "forced_tokens"]
    assert forced.reason == "max_reasoning_tokens" and 8 <= forced.reasoning_tokens < 24
    assert budgeted.messages[-1].channel == "final" and budgeted.final_text == ENC.decode(THOUGHT)
    assert budgeted.finish_reason == "stop" and not budgeted.truncated
    cut, answer = engine.prompts[-2:]
    assert answer[len(cut) :][-len(forced.token_ids) :] == list(forced.token_ids)
    assert list(forced.token_ids)[1] == START
