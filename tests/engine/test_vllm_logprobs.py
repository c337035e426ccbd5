"""The logprobs opt-in on real vLLM: in process (SamplingParams.logprobs) and over its HTTP
server (``"logprobs": 0``), on the tiny random gpt-oss. Runs in the vLLM environment."""

from __future__ import annotations

import math

import pytest
from harmony_agent.engine import GenerationRequest

from .vllm_server import CPU_ARGS
from .vllm_server import vllm_server as serve_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.anyio]
HEADER = [200006, 1428, 200008, 12194, 200007]  # <|start|>user<|message|>hi<|end|>
REQUEST = GenerationRequest(prompt_ids=[*HEADER, 1000], max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


def check(chunks):
    ids = [t for c in chunks for t in c.token_ids]
    logprobs = [lp for c in chunks for lp in c.logprobs]
    assert ids and len(logprobs) == len(ids)
    assert all(lp is not None and math.isfinite(lp) and lp <= 0.0 for lp in logprobs), logprobs


async def test_in_process_vllm_returns_a_logprob_per_sampled_id(tiny_model):
    from harmony_agent.engine.vllm import VLLMEngine

    async with VLLMEngine(str(tiny_model), logprobs=True, **CPU_ARGS) as engine:
        check([chunk async for chunk in engine.generate(REQUEST)])
        plain = VLLMEngine(str(tiny_model), **CPU_ARGS)
        assert plain._params(REQUEST).logprobs is None  # not asked for: not computed


async def test_vllm_server_returns_a_logprob_per_sampled_id(tiny_model):
    from harmony_agent.engine import OpenAICompatibleEngine

    with serve_vllm(str(tiny_model)) as url:
        async with OpenAICompatibleEngine(url, logprobs=True) as engine:
            check([chunk async for chunk in engine.generate(REQUEST)])
