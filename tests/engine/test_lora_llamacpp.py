"""A LoRA adapter applied per request on a real llama-server, on the tiny random gpt-oss.

The adapter is made at test time with peft (``tiny_lora``: a low-rank ``lm_head`` update that
redirects planted steps) and converted with llama.cpp's own ``convert_lora_to_gguf.py``;
llama-server loads it at start (``--lora``) without applying it. The greedy ids with the
adapter differ from those without, the base model comes back once the adapter is not asked
for, and the same agent samples differently with ``adapter=``. Runs in the llama.cpp
environment: ``make test-llamacpp``.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import ClassVar

import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest, LlamaServerEngine
from harmony_agent.errors import EngineRequestError, HarmonyAgentError

from .tiny_gguf import build_gguf, llama_cpp_sources, llama_server
from .tiny_gptoss import ASSISTANT, CALL_TEXT, CHAIN_STOP_RETURN
from .tiny_lora import adapter_to_gguf, plant_adapter

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]
ENC = load_encoding()
HEADER = [200006, 1428, 200008, 12194, 200007]  # <|start|>user<|message|>hi<|end|>
#: with the adapter: 2000 -> 3333 (base: 2001), and an agent's turn starts with 2000
REDIRECT = {2000: 3333, ASSISTANT: 2000}


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny-lora")
    model_dir, gguf = build_gguf(work, lambda s: ENC.encode(s, allowed_special="all"))
    adapter = plant_adapter(model_dir, work / "planted", REDIRECT)
    planted = adapter_to_gguf(adapter, model_dir, work / "planted.gguf", llama_cpp_sources())
    with llama_server(gguf, args=("--lora", str(planted), "--lora-init-without-apply")) as url:
        yield url


class Recording(LlamaServerEngine):
    outputs: ClassVar[list[tuple[str | None, list[int]]]] = []

    async def generate(self, request):
        ids: list[int] = []
        self.outputs.append((request.adapter, ids))
        async with aclosing(super().generate(request)) as chunks:
            async for chunk in chunks:
                ids.extend(chunk.token_ids)
                yield chunk


@pytest.fixture(scope="module")
async def engine(server_url):
    async with Recording(server_url) as eng:
        yield eng


async def greedy(engine, prompt, adapter=None, max_tokens=3):
    request = GenerationRequest(
        prompt_ids=prompt, max_tokens=max_tokens, temperature=0.0, adapter=adapter
    )
    return [t for chunk in [c async for c in engine.generate(request)] for t in chunk.token_ids]


@pytest.mark.anyio
async def test_the_adapter_changes_the_greedy_ids_and_the_base_model_comes_back(engine):
    base = await greedy(engine, [*HEADER, 2000])
    tuned = await greedy(engine, [*HEADER, 2000], adapter="planted")
    again = await greedy(engine, [*HEADER, 2000])
    assert base == CHAIN_STOP_RETURN[1:]  # 2001, <|return|>
    assert tuned[0] == 3333  # the adapter's step
    assert again == base  # not left applied on the slot
    assert [a["path"].endswith("planted.gguf") for a in engine.lora_adapters] == [True]


@pytest.mark.anyio
async def test_an_adapter_the_server_did_not_load_is_refused(engine):
    with pytest.raises(EngineRequestError, match="no LoRA adapter 'sales' loaded"):
        await greedy(engine, [*HEADER, 2000], adapter="sales")


@tool
def lookup(city: str) -> dict:
    """Population of a city."""
    return {"city": city, "population": 717_710}


@pytest.mark.anyio
async def test_the_same_agent_samples_differently_with_the_adapter(engine):
    agent = Agent(
        tools=[lookup],
        engine=engine,
        temperature=0.0,
        max_turns=1,
        max_tokens_per_turn=24,
        conversation_start_date="2026-01-01",
    )
    engine.outputs.clear()
    ends = []
    for adapter in (None, "planted"):
        try:
            result = await agent.run("How many people live in Oslo?", adapter=adapter)
        except HarmonyAgentError as exc:
            ends.append(type(exc).__name__)
        else:
            ends.append(result.final_text)
    assert ends[0] == "MaxTurnsError"  # the base model called the tool, then ran out of turns
    assert ends[1] != ends[0]  # the adapter's turn called nothing
    (base_adapter, base), (tuned_adapter, tuned) = engine.outputs
    assert (base_adapter, tuned_adapter) == (None, "planted")
    assert base == ENC.encode(CALL_TEXT, allowed_special="all")  # the planted call
    assert tuned[:2] == [2000, 3333]  # the adapter's steps from <|start|>assistant on
