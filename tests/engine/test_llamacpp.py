"""LlamaServerEngine against a real llama-server and LlamaCppEngine in process, both on a tiny
random gpt-oss GGUF made at test time (planted chains). Runs in the llama.cpp environment:
``make test-llamacpp``."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import aclosing
from pathlib import Path
from typing import ClassVar

import anyio
import httpx
import pytest
from harmony_agent import Agent, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.engine import GenerationRequest
from harmony_agent.errors import ConfigurationError, MaxTurnsError

from .tiny_gguf import CHAIN_ONE_GAP, build_gguf, llama_server
from .tiny_gptoss import CALL_TEXT, CHAIN_STOP_CALL, CHAIN_STOP_RETURN

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON_ENV = "HARMONY_AGENT_VLLM_PYTHON"
ENC = load_encoding()
HEADER = [200006, 1428, 200008, 12194, 200007]  # <|start|>user<|message|>hi<|end|>
# the notes' Harmony-ish prompt: random weights continue it with random (non-planted) ids
RANDOM_PROMPT = [200006, 17360, 200008, 3575, 553, 17554, 200007, 200006, 1428, 200008, 12194]


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(HF model dir, GGUF path): the tiny gpt-oss with the agent chains and the UTF-8 gap."""
    return build_gguf(
        tmp_path_factory.mktemp("tiny-gguf"), lambda s: ENC.encode(s, allowed_special="all")
    )


@pytest.fixture(scope="module")
def server_url(tiny_gguf):
    """llama-server on 127.0.0.1 with two slots of 2048 tokens."""
    with llama_server(tiny_gguf[1], slots=2, ctx=4096) as url:
        yield url


def recording(base):
    class Recording(base):
        requests: ClassVar[list[GenerationRequest]] = []

        async def generate(self, request):
            self.requests.append(request)
            async with aclosing(super().generate(request)) as chunks:
                async for chunk in chunks:
                    yield chunk

    return Recording


@pytest.fixture(scope="module")
async def server(server_url):
    from harmony_agent.engine import LlamaServerEngine

    async with recording(LlamaServerEngine)(server_url) as engine:
        yield engine


@pytest.fixture(scope="module")
async def local(tiny_gguf):
    from harmony_agent.engine import LlamaCppEngine

    engine = recording(LlamaCppEngine)(tiny_gguf[1], n_ctx=2048, n_threads=1)
    await engine.start()
    yield engine
    await engine.aclose()


@pytest.fixture(params=["server", "local"])
def engine(request):
    return request.getfixturevalue(request.param)


async def collect(engine, prompt, max_tokens=40, **kwargs):
    request = GenerationRequest(prompt_ids=prompt, max_tokens=max_tokens, **kwargs)
    return [chunk async for chunk in engine.generate(request)]


def ids_of(chunks):
    return [t for c in chunks for t in c.token_ids]


# --- both engines ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_streams_and_stops_on_call(engine):
    chunks = await collect(engine, [*HEADER, 1000], temperature=0.0)
    assert ids_of(chunks) == CHAIN_STOP_CALL[1:]  # 1001..1009, <|call|> included
    assert len(chunks) > 1 and all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.stop_token_id) == ("stop", 200012)
    assert (last.usage.prompt_tokens, last.usage.output_tokens) == (6, 10)


@pytest.mark.anyio
async def test_stops_on_return(engine):
    chunks = await collect(engine, [*HEADER, 2000], temperature=0.0)
    assert ids_of(chunks) == CHAIN_STOP_RETURN[1:]
    assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("stop", 200002)


@pytest.mark.anyio
async def test_length_finish(engine):
    chunks = await collect(engine, [*HEADER, 1000], max_tokens=4, temperature=0.0)
    assert ids_of(chunks) == [1001, 1002, 1003, 1004]
    assert (chunks[-1].finish_reason, chunks[-1].stop_token_id) == ("length", None)


@pytest.mark.anyio
async def test_incomplete_utf8_token_comes_through(engine):
    chunks = await collect(engine, [*HEADER, 3000], temperature=0.0)
    assert ids_of(chunks) == CHAIN_ONE_GAP[1:]  # 54462 (half of 龘), 246, <|return|>


@pytest.mark.anyio
async def test_incomplete_utf8_token_at_the_limit_comes_through(engine):
    # llama-server never streams it and no later text names it: sampled again, not streamed
    chunks = await collect(engine, [*HEADER, 3000], max_tokens=1, temperature=0.0)
    assert ids_of(chunks) == [54462] and chunks[-1].finish_reason == "length"
    assert chunks[-1].usage.output_tokens == 1


# prompts whose greedy continuations are random (not planted) ids, or run into a chain
GREEDY_PROMPTS = [RANDOM_PROMPT, [*RANDOM_PROMPT, 200007, 200006, 173781], [*HEADER, 17, 18, 19]]
GREEDY_TOKENS = 16
STOPS = (200002, 200012, 199999)


def up_to_stop(ids):
    """What an engine that stops on the Harmony stops returns of a longer greedy run."""
    for i, t in enumerate(ids):
        if t in STOPS:
            return ids[: i + 1]
    return ids


@pytest.fixture(scope="module")
def transformers_greedy(tiny_gguf):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gguf[0], dtype=torch.bfloat16)
    out = []
    for prompt in GREEDY_PROMPTS:
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=GREEDY_TOKENS, do_sample=False)[
            0
        ][len(prompt) :]
        out.append(up_to_stop(ids.tolist()))
    return out


VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

if __name__ == "__main__":
    model, prompts, n, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    llm = LLM(model=model, skip_tokenizer_init=True, **json.loads(sys.argv[5]))
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, detokenize=False)
    results = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
    with open(out, "w") as f:
        json.dump([list(r.outputs[0].token_ids) for r in results], f)
"""


@pytest.fixture(scope="module")
def vllm_greedy(tiny_gguf, tmp_path_factory):
    """vLLM's greedy ids on the same weights, from the vLLM environment in a subprocess (the
    two environments pin different torch/transformers stacks)."""
    from .vllm_server import CPU_ARGS

    python = Path(os.environ.get(VLLM_PYTHON_ENV) or ROOT / ".venv-vllm" / "bin" / "python")
    if not python.exists():
        raise RuntimeError(f"no vLLM environment at {python}: run `make setup-vllm`")
    work = tmp_path_factory.mktemp("vllm-greedy")
    script, out = work / "greedy.py", work / "greedy.json"
    script.write_text(VLLM_SCRIPT)
    cmd = [str(python), str(script), str(tiny_gguf[0]), json.dumps(GREEDY_PROMPTS)]
    cmd += [str(GREEDY_TOKENS), str(out), json.dumps(CPU_ARGS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vLLM failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [up_to_stop(ids) for ids in json.loads(out.read_text())]


@pytest.mark.anyio
async def test_greedy_tokens_match_transformers_and_vllm(engine, transformers_greedy, vllm_greedy):
    ours = []
    for prompt in GREEDY_PROMPTS:
        chunks = await collect(engine, prompt, max_tokens=GREEDY_TOKENS, temperature=0.0)
        ours.append(ids_of(chunks))
    print(f"greedy ids: {ours}")
    assert ours == transformers_greedy
    assert ours == vllm_greedy
    assert sum(len(ids) for ids in ours) >= 2 * GREEDY_TOKENS  # not just planted stops


calls: list[str] = []
# long enough that the second turn's cached share means something
INSTRUCTIONS = "You answer questions about cities. " + " ".join(
    f"Rule {i}: be precise, cite the tool, and keep the answer short." for i in range(20)
)


@tool
def lookup(city: str) -> dict:
    """Population of a city."""
    calls.append(city)
    return {"city": city, "population": 717_710}


@pytest.mark.anyio
async def test_agent_loop_executes_the_planted_call(engine):
    engine.requests.clear()
    calls.clear()
    agent = Agent(
        INSTRUCTIONS,
        tools=[lookup],
        engine=engine,
        reasoning_effort="low",
        temperature=0.0,
        max_turns=2,
        conversation_start_date="2026-01-01",
    )
    events = []
    with pytest.raises(MaxTurnsError):  # the planted chain calls again on every turn
        async for event in agent.stream("How many people live in Oslo?"):
            events.append(event)
    assert calls == ["Oslo", "Oslo"]
    call = next(e for e in events if e.type == "tool_call")
    assert (call.recipient, call.arguments) == ("functions.lookup", {"city": "Oslo"})
    result = next(e for e in events if e.type == "tool_result")
    assert result.ok and result.output == '{"city":"Oslo","population":717710}'
    first, second = (list(r.prompt_ids) for r in engine.requests)
    sampled = ENC.encode(CALL_TEXT, allowed_special="all")
    assert second[: len(first) + len(sampled)] == first + sampled  # token for token
    assert ENC.decode(second[len(first) + len(sampled) :]).startswith(
        '<|start|>functions.lookup to=assistant<|channel|>commentary<|message|>{"city":"Oslo"'
    )
    turns = [e for e in events if e.type == "turn_finished"]
    cached = [t.cached_prompt_tokens for t in turns]
    print(f"cached prompt tokens per turn: {cached} of {[t.prompt_tokens for t in turns]}")
    # turn 2 reuses turn 1's prompt and sampled ids (the stop token itself was never evaluated)
    assert cached[1] >= len(first) + len(sampled) - 1
    session = engine.requests[0].session_id
    assert session and engine.requests[1].session_id == session
    if hasattr(engine, "slot_of"):
        assert engine.slot_of(session) is not None  # pinned: the second turn went to that slot


# --- llama-server --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_server_really_skips_the_incomplete_token(server_url):
    """The premise of the gap guard, on the live server: the raw stream never carries 54462."""
    body = {"prompt": [*HEADER, 3000], "n_predict": 8, "stream": True, "temperature": 0.0}
    streamed, predicted = [], 0
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", server_url + "/completion", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    streamed += event["tokens"]
                    predicted = event["tokens_predicted"]
    assert streamed == [246, 200002] and predicted == 3


@pytest.mark.anyio
async def test_server_cancel_frees_the_slot(server, server_url):
    request = GenerationRequest(
        prompt_ids=[*HEADER, 17, 18, 19], max_tokens=1500, temperature=1.0, seed=1
    )
    seen = 0
    async with aclosing(server.generate(request)) as chunks:
        async for chunk in chunks:
            seen += len(chunk.token_ids)
            if seen >= 3:
                break
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(20):
            while any(
                s.get("is_processing") for s in (await client.get(server_url + "/slots")).json()
            ):
                await anyio.sleep(0.05)
    assert 3 <= seen < 1500
    chunks = await collect(server, [*HEADER, 2000], temperature=0.0)
    assert ids_of(chunks) == CHAIN_STOP_RETURN[1:]


@pytest.mark.anyio
async def test_server_not_gpt_oss_is_named(server_url):
    from harmony_agent.engine import LlamaServerEngine
    from harmony_agent.engine.llama_server import HARMONY_PROBE

    # the live server does serve gpt-oss; the probe it is checked with must tokenize exactly
    async with httpx.AsyncClient() as client:
        got = (await client.post(server_url + "/tokenize", json={"content": HARMONY_PROBE})).json()
    assert got["tokens"] == ENC.encode(HARMONY_PROBE, allowed_special="all")
    async with LlamaServerEngine(server_url) as engine:
        await collect(engine, [*HEADER, 2000], temperature=0.0)
        assert engine.props["total_slots"] == 2 and engine.context_window == 2048


# --- in process ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_local_cancel_mid_stream_leaves_a_usable_context(local):
    request = GenerationRequest(
        prompt_ids=[*HEADER, 17, 18, 19], max_tokens=1000, temperature=1.0, seed=1
    )
    seen = 0
    async with aclosing(local.generate(request)) as chunks:
        async for chunk in chunks:
            seen += len(chunk.token_ids)
            if seen >= 3:
                break
    assert seen == 3 and not local._turn.locked()
    chunks = await collect(local, [*HEADER, 1000], temperature=0.0)
    assert ids_of(chunks) == CHAIN_STOP_CALL[1:]


@pytest.mark.anyio
async def test_local_cancel_by_scope(local):
    got = []
    # the random model stops on its own after a few ids often enough (a stop as the second id
    # in about 1 of 20 unseeded samples): cancel at the first id, with a seed whose sample runs
    # on past 30 ids
    request = GenerationRequest(
        prompt_ids=[*HEADER, 5, 6], max_tokens=1000, temperature=1.0, seed=0
    )
    with anyio.CancelScope() as scope:
        async for chunk in local.generate(request):
            got.extend(chunk.token_ids)
            scope.cancel()  # delivered inside the engine at its next await
    assert scope.cancelled_caught and len(got) == 1 and not local._turn.locked(), got


@pytest.mark.anyio
async def test_local_runs_queue_in_arrival_order(local):
    order: list[tuple[str, str]] = []

    async def one(name, prompt, delay):
        await anyio.sleep(delay)
        request = GenerationRequest(prompt_ids=prompt, max_tokens=40, temperature=0.0)
        first = True
        async for chunk in local.generate(request):
            if first:
                order.append((name, "first"))
                first = False
            if chunk.finish_reason:
                order.append((name, "last"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a", [*HEADER, 1000], 0)
        tg.start_soon(one, "b", [*HEADER, 2000], 0.01)
        tg.start_soon(one, "c", [*HEADER, 1000], 0.02)
    assert order == [(n, e) for n in "abc" for e in ("first", "last")]


@pytest.mark.anyio
async def test_local_rewind_past_the_sliding_window_matches_a_fresh_context(tiny_gguf):
    """A prompt that leaves the context further back than the 128-token window cannot reuse
    the sliding-window cache: the engine evaluates it again and samples what a fresh context
    samples; a rewind inside the window keeps its prefix."""
    from harmony_agent.engine import LlamaCppEngine

    long = [*HEADER, *range(3100, 3500)]  # 405 ids, more than window + ubatch cells
    tail = [*range(5000, 5010), 200006, 173781]

    async def greedy(engine, prompt):
        chunks = await collect(engine, prompt, max_tokens=8, temperature=0.0)
        return ids_of(chunks), chunks[-1].usage.cached_prompt_tokens

    small = {"n_ctx": 1024, "n_batch": 64, "n_ubatch": 64, "n_threads": 1}
    async with LlamaCppEngine(tiny_gguf[1], **small) as engine:
        await greedy(engine, long)
        far_ids, far_cached = await greedy(engine, [*long[:100], *tail])
        await greedy(engine, long)
        near_ids, near_cached = await greedy(engine, [*long[:395], *tail])
    async with LlamaCppEngine(tiny_gguf[1], **small) as fresh:
        assert (await greedy(fresh, [*long[:100], *tail]))[0] == far_ids
    async with LlamaCppEngine(tiny_gguf[1], **small) as fresh:
        assert (await greedy(fresh, [*long[:395], *tail]))[0] == near_ids
    assert far_cached == 0  # re-evaluated: the window before position 100 was gone
    assert near_cached == 395


@pytest.mark.anyio
async def test_local_refuses_a_gguf_that_is_not_gpt_oss(tiny_gguf, tmp_path):
    from harmony_agent.engine import LlamaCppEngine

    # same file with one vocabulary entry renamed (same length, so the GGUF stays valid)
    data = tiny_gguf[1].read_bytes()
    assert data.count(b"<|call|>") == 1
    patched = tmp_path / "not-gpt-oss.gguf"
    patched.write_bytes(data.replace(b"<|call|>", b"<|cal!|>"))
    with pytest.raises(ConfigurationError, match="is not a gpt-oss GGUF"):
        await LlamaCppEngine(patched, n_ctx=256).start()
    with pytest.raises(ConfigurationError, match="no GGUF file at"):
        await LlamaCppEngine(tmp_path / "missing.gguf").start()
