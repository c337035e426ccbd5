"""LoRA on the real vLLM CPU build, with the tiny random gpt-oss of ``tiny_gptoss``.

vLLM's CPU build cannot run LoRA for gpt-oss: with LoRA enabled, vLLM runs every
mixture-of-experts layer through its Triton kernel (even for a request without an adapter and
when no adapter targets the experts), and the CPU build has no Triton, so the first forward
pass kills the engine. ``VLLMEngine`` therefore refuses adapters on a CPU before it starts;
these tests check that refusal, the ``LoRARequest`` each adapter name becomes (vLLM's own
class), and — with the refusal switched off — that vLLM really fails as described, so the
refusal goes once a vLLM release can do it. The adapter's effect on sampling is tested on
llama-server (``test_lora_llamacpp``); the adapter's name on the wire of a vLLM server in
``test_lora``. Runs in the vLLM environment: ``make test-vllm``.
"""

from __future__ import annotations

import gc
import warnings

import pytest
from harmony_agent.engine import GenerationRequest
from harmony_agent.errors import ConfigurationError, EngineError

from .vllm_server import CPU_ARGS

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
HEADER = [200006, 1428, 200008, 12194, 200007]  # <|start|>user<|message|>hi<|end|>


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_engine(tiny_model, tmp_path, **kwargs):
    from harmony_agent.engine.vllm import VLLMEngine

    adapters = {"planted": tmp_path / "planted", "tone": str(tmp_path / "tone")}
    return VLLMEngine(str(tiny_model), lora_adapters=adapters, **CPU_ARGS, **kwargs)


def test_each_adapter_name_becomes_vllms_lora_request(tiny_model, tmp_path):
    from vllm.lora.request import LoRARequest

    engine = make_engine(tiny_model, tmp_path, max_lora_rank=8)
    planted, tone = engine.lora_request("planted"), engine.lora_request("tone")
    assert isinstance(planted, LoRARequest)
    assert (planted.lora_name, planted.lora_int_id, planted.lora_path) == (
        "planted",
        1,
        str(tmp_path / "planted"),
    )
    assert (tone.lora_name, tone.lora_int_id) == ("tone", 2)
    assert engine.lora_request(None) is None
    args = engine.engine_args
    assert (args["enable_lora"], args["max_loras"], args["max_lora_rank"]) == (True, 2, 8)
    with pytest.raises(ConfigurationError, match="'sales' is not one this engine serves"):
        engine.lora_request("sales")


@pytest.mark.anyio
async def test_the_cpu_build_refuses_lora_before_starting(tiny_model, tmp_path):
    engine = make_engine(tiny_model, tmp_path)
    request = GenerationRequest(prompt_ids=[*HEADER, 2000], max_tokens=4, adapter="planted")
    with pytest.raises(ConfigurationError, match="CPU build cannot serve LoRA") as caught:
        async for _ in engine.generate(request):
            pass
    assert "Triton" in str(caught.value) and "llama-server" in str(caught.value)
    assert caught.value.settings == ("lora_adapters",)
    assert engine._llm is None  # nothing started
    await engine.aclose()


@pytest.mark.anyio
async def test_vllm_cpu_really_cannot_run_gpt_oss_with_lora_enabled(
    tiny_model, tmp_path, monkeypatch, capfd
):
    """Why the refusal exists: without it, even a base-model request dies in the MoE layer."""
    import harmony_agent.engine.vllm as vllm_engine

    monkeypatch.setattr(vllm_engine, "_check_lora_platform", lambda: None)
    engine = make_engine(tiny_model, tmp_path)
    await engine.start()  # starts: the failure comes with the first forward pass
    try:
        with pytest.raises(EngineError, match="EngineDeadError"):
            async for _ in engine.generate(
                GenerationRequest(prompt_ids=[*HEADER, 2000], max_tokens=4, temperature=0.0)
            ):
                pass
    finally:
        await engine.aclose()
        # the dead engine core leaves its zmq context to the garbage collector
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    captured = capfd.readouterr()
    log = captured.out + captured.err  # the engine core's and worker's log
    assert "triton_moe.py" in log, (
        "vLLM failed for another reason than its Triton MoE kernel; see the log above"
    )
    assert "module 'triton.language' has no attribute 'bfloat16'" in log
