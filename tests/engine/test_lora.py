"""LoRA adapters without a model: the adapter's name through the agent (per agent, per run,
resumed, traced, on the command line) and on the wire of every engine that takes one (vLLM and
Fireworks servers on a loopback stand-in, llama-server's per-request scales), and the clear
refusals (an adapter the server does not know, an engine that serves none)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import httpx
import pytest
from harmony_agent import Agent, RunState, tool
from harmony_agent._encoding import load_encoding
from harmony_agent.batch import run_batch
from harmony_agent.engine import (
    FunctionEngine,
    GenerationRequest,
    LlamaServerEngine,
    OpenAICompatibleEngine,
    ScriptedEngine,
)
from harmony_agent.engine._flavor import VLLM
from harmony_agent.engine.llamacpp import LlamaCppEngine
from harmony_agent.engine.vllm import VLLMEngine
from harmony_agent.errors import ConfigurationError, EngineRequestError
from harmony_agent.trace import load_trace

from .fake_openai import serve

pytestmark = pytest.mark.anyio
ENC = load_encoding()
REPLY = ENC.encode("<|channel|>final<|message|>Hi<|return|>", allowed_special="all")
REQUEST = GenerationRequest(
    prompt_ids=[200006, 1428, 200008, 12194, 200007, 200006, 173781], max_tokens=50
)
DONE = "<|channel|>final<|message|>Done.<|return|>"
PAY = '<|channel|>commentary to=functions.pay <|constrain|>json<|message|>{"amount":5}<|call|>'


async def collect(engine, request=REQUEST):
    return [chunk async for chunk in engine.generate(request)]


# --- OpenAI-compatible servers ------------------------------------------------------------------


async def test_vllm_server_gets_the_adapter_as_the_model():
    async with serve(REPLY) as server:
        async with OpenAICompatibleEngine(server.url, model="openai/gpt-oss-20b") as engine:
            await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
            await collect(engine)
    with_adapter, base = server.requests
    assert with_adapter["model"] == "support"
    assert base["model"] == "openai/gpt-oss-20b"
    assert "lora_path" not in with_adapter  # the vLLM flavor names it only as the model


async def test_an_adapter_the_vllm_server_does_not_serve_is_named():
    async with serve(REPLY, ["status:404"]) as server:
        async with OpenAICompatibleEngine(
            server.url, model="openai/gpt-oss-20b", max_retries=0
        ) as engine:
            with pytest.raises(EngineRequestError) as caught:
                await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
    message = str(caught.value)
    assert "LoRA adapter 'support'" in message and "fake failure 404" in message
    assert "--enable-lora --lora-modules NAME=/path/to/adapter" in message
    assert caught.value.settings == ("adapter",)


def _vllm_stand_in(status: int, message: str):
    """vLLM's answer to a model it does not serve, and a /models with a LoRA card."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            cards = [
                {"id": "openai/gpt-oss-20b", "max_model_len": 4096, "parent": None},
                {"id": "support", "root": "/adapters/support", "parent": "openai/gpt-oss-20b"},
            ]
            return httpx.Response(200, json={"object": "list", "data": cards})
        error = {"message": message, "type": "NotFoundError", "code": status}
        return httpx.Response(status, json={"error": error})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [404, 400])
async def test_vllm_model_does_not_exist_is_the_adapter_error(status):
    transport = _vllm_stand_in(status, "The model `suport` does not exist.")
    async with OpenAICompatibleEngine("http://vllm.test/v1", transport=transport) as engine:
        with pytest.raises(EngineRequestError, match="does not serve the LoRA adapter 'suport'"):
            await collect(engine, dataclasses.replace(REQUEST, adapter="suport"))


async def test_a_404_of_the_route_itself_still_points_at_the_base_url():
    transport = httpx.MockTransport(lambda r: httpx.Response(404, json={"detail": "Not Found"}))
    engine = OpenAICompatibleEngine("http://vllm.test", model="base", transport=transport)
    async with engine:
        with pytest.raises(EngineRequestError, match=r"check the base URL \(it ends in /v1\)"):
            await collect(engine, dataclasses.replace(REQUEST, adapter="support"))


async def test_a_400_that_is_not_about_the_model_stays_a_plain_rejection():
    transport = _vllm_stand_in(400, "max_tokens must be at least 1")
    async with OpenAICompatibleEngine("http://vllm.test/v1", transport=transport) as engine:
        with pytest.raises(EngineRequestError, match="rejected the request") as caught:
            await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
    assert "adapter" not in str(caught.value)


async def test_discovery_picks_the_base_model_and_its_window_not_an_adapter_card():
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return _vllm_stand_in(404, "").handle_request(request)
        requests.append(json.loads(request.content))
        return httpx.Response(404, json={"error": {"message": "stop here"}})

    engine = OpenAICompatibleEngine(
        "http://vllm.test/v1", transport=httpx.MockTransport(handler), max_retries=0
    )
    async with engine:
        with pytest.raises(EngineRequestError):
            await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
    assert engine.model == "openai/gpt-oss-20b"  # two cards, one of them an adapter
    assert engine.context_window == 4096  # the base model's card
    assert requests[0]["model"] == "support"


async def test_fireworks_gets_the_fine_tuned_model_path():
    tuned = "accounts/acme/models/gpt-oss-20b-support"
    async with serve(REPLY, ["fireworks", "status:404"]) as server:
        async with OpenAICompatibleEngine(
            server.url,
            model="accounts/fireworks/models/gpt-oss-20b",
            flavor="fireworks",
            max_retries=0,
        ) as engine:
            await collect(engine, dataclasses.replace(REQUEST, adapter=tuned))
            with pytest.raises(EngineRequestError) as caught:
                await collect(engine, dataclasses.replace(REQUEST, adapter=tuned + "-typo"))
    assert server.requests[0]["model"] == tuned
    assert f"'{tuned}-typo'" in str(caught.value)
    assert "accounts/ACCOUNT/models/NAME" in str(caught.value)


async def test_a_flavor_with_an_adapter_field_keeps_the_model():
    flavor = dataclasses.replace(VLLM, name="lora-field", adapter_field="lora_path")
    async with serve(REPLY) as server:
        async with OpenAICompatibleEngine(server.url, model="base", flavor=flavor) as engine:
            await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
            await collect(engine)
    with_adapter, base = server.requests
    assert with_adapter["model"] == "base" and with_adapter["lora_path"] == "support"
    assert "lora_path" not in base


# --- llama.cpp ------------------------------------------------------------------------------


class LlamaStandIn:
    """llama-server's /props, /tokenize, /lora-adapters and a one-chunk /completion."""

    def __init__(self, adapters):
        self.adapters = adapters  # None: no /lora-adapters endpoint
        self.completions: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/props":
            settings = {"n_ctx": 4096}
            return httpx.Response(
                200, json={"total_slots": 1, "default_generation_settings": settings}
            )
        if path == "/tokenize":
            content = json.loads(request.content)["content"]
            return httpx.Response(200, json={"tokens": ENC.encode(content, allowed_special="all")})
        if path == "/lora-adapters" and self.adapters is not None:
            return httpx.Response(200, json=self.adapters)
        if path != "/completion":
            return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})
        self.completions.append(json.loads(request.content))
        final = {
            "content": "",
            "tokens": [200002],
            "stop": True,
            "stop_type": "eos",
            "tokens_predicted": 1,
            "tokens_evaluated": 7,
            "id_slot": 0,
        }
        return httpx.Response(
            200,
            text=f"data: {json.dumps(final)}\n\n",
            headers={"content-type": "text/event-stream"},
        )


ADAPTERS = [
    {"id": 0, "path": "/adapters/tone.gguf", "scale": 1.0},
    {"id": 1, "path": "/adapters/support.gguf", "scale": 0.0},
]


async def test_llama_server_applies_the_named_adapter_and_zeroes_the_others():
    stand_in = LlamaStandIn(ADAPTERS)
    engine = LlamaServerEngine("http://llama.test:8080", transport=httpx.MockTransport(stand_in))
    async with engine:
        await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
        await collect(engine, dataclasses.replace(REQUEST, adapter="/adapters/tone.gguf"))
        await collect(engine)
    support, tone, base = (body["lora"] for body in stand_in.completions)
    assert support == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert tone == [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}]
    # the server applies tone.gguf to every request by default: the base model needs zeros
    assert base == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]


@pytest.mark.parametrize(
    ("adapters", "said"), [(ADAPTERS, "its adapters: 'tone', 'support'"), (None, "loaded none")]
)
async def test_llama_server_refuses_an_adapter_it_did_not_load(adapters, said):
    stand_in = LlamaStandIn(adapters)
    engine = LlamaServerEngine("http://llama.test:8080", transport=httpx.MockTransport(stand_in))
    async with engine:
        with pytest.raises(EngineRequestError) as caught:
            await collect(engine, dataclasses.replace(REQUEST, adapter="sales"))
        await collect(engine)  # the base model still works
    assert "no LoRA adapter 'sales'" in str(caught.value) and said in str(caught.value)
    assert "--lora sales.gguf" in str(caught.value)
    assert len(stand_in.completions) == 1  # refused before sampling
    assert ("lora" in stand_in.completions[0]) is (adapters is not None)


async def test_llamacpp_in_process_refuses_adapters(tmp_path):
    engine = LlamaCppEngine(tmp_path / "never-loaded.gguf")
    with pytest.raises(EngineRequestError, match="not supported by LlamaCppEngine") as caught:
        await collect(engine, dataclasses.replace(REQUEST, adapter="support"))
    assert "--lora ADAPTER.gguf" in str(caught.value)
    assert engine._llm is None  # refused before loading anything


# --- vLLM in-process, before it starts --------------------------------------------------------


async def test_vllm_engine_refuses_an_adapter_it_was_not_given_before_starting():
    engine = VLLMEngine("tiny", lora_adapters={"support": "/adapters/support", "tone": "/t"})
    assert engine.engine_args["enable_lora"] is True and engine.engine_args["max_loras"] == 2
    with pytest.raises(ConfigurationError) as caught:
        await collect(engine, dataclasses.replace(REQUEST, adapter="sales"))
    assert "'sales'" in str(caught.value) and "'support', 'tone'" in str(caught.value)
    assert engine._llm is None  # nothing was started (vLLM is not even imported here)


def test_vllm_engine_lora_settings_are_checked():
    assert "enable_lora" not in VLLMEngine("tiny").engine_args
    assert (
        VLLMEngine("tiny", lora_adapters={"a": "/a"}, max_lora_rank=64).engine_args["max_lora_rank"]
        == 64
    )
    with pytest.raises(ConfigurationError, match="no lora_adapters"):
        VLLMEngine("tiny", max_lora_rank=8)
    with pytest.raises(ConfigurationError, match="needs a path"):
        VLLMEngine("tiny", lora_adapters={"a": ""})
    with pytest.raises(ConfigurationError, match="must map adapter names"):
        VLLMEngine("tiny", lora_adapters=["/a"])


# --- the agent ------------------------------------------------------------------------------


def adapters_of(engine):
    return [r.adapter for r in engine.generation_requests]


async def test_the_agents_adapter_reaches_every_request_and_a_run_overrides_it():
    engine = ScriptedEngine([DONE] * 5)
    agent = Agent(engine=engine, adapter="support")
    await agent.run("a")
    await agent.run("b", adapter="tone")
    async with agent.stream("c", adapter="sales") as stream:
        async for _ in stream:
            pass
    await Agent(engine=engine).run("d")
    assert adapters_of(engine) == ["support", "tone", "sales", None]


def test_run_sync_takes_an_adapter():
    engine = ScriptedEngine([DONE, DONE])
    agent = Agent(engine=engine, adapter="support")
    agent.run_sync("a", adapter="tone")
    agent.run_sync("b")
    assert adapters_of(engine) == ["tone", "support"]


@tool(needs_approval=True)
def pay(amount: int) -> str:
    "Pay an amount."
    return f"paid {amount}"


async def test_a_resumed_run_keeps_its_adapter(tmp_path):
    trace = tmp_path / "run.jsonl"
    first = ScriptedEngine([PAY])
    paused = await Agent(tools=[pay], engine=first, adapter="support").run(
        "pay 5", adapter="tone", trace=trace
    )
    assert paused.status == "paused" and paused.state.adapter == "tone"
    state = RunState.from_json(paused.state.to_json())
    assert state.adapter == "tone"
    assert load_trace(trace).resume_state().adapter == "tone"

    again = ScriptedEngine([DONE])
    agent = Agent(tools=[pay], engine=again)  # no adapter of its own
    decision = {state.pending[0].call_id: True}
    result = await agent.resume(state, approve=decision, trace=trace)
    assert result.final_text == "Done." and adapters_of(again) == ["tone"]
    resumed = load_trace(trace)
    assert resumed.resumed == 1 and resumed.adapter == "tone"  # the resumed record says so

    other = ScriptedEngine([DONE])
    agent = Agent(tools=[pay], engine=other, adapter="support")
    await agent.resume(RunState.from_json(paused.state.to_json()), approve=decision, adapter="x")
    assert adapters_of(other) == ["x"]  # a resumed run's own adapter wins


async def test_a_state_without_an_adapter_takes_the_agents():
    paused = await Agent(tools=[pay], engine=ScriptedEngine([PAY])).run("pay 5")
    assert "adapter" not in paused.state.to_dict()  # states of base-model runs are unchanged
    engine = ScriptedEngine([DONE])
    agent = Agent(tools=[pay], engine=engine, adapter="support")
    await agent.resume(paused.state, approve={paused.state.pending[0].call_id: True})
    assert adapters_of(engine) == ["support"]


async def test_bad_adapters_are_refused_clearly():
    with pytest.raises(ConfigurationError, match="adapter must be the name of a LoRA adapter"):
        Agent(engine=ScriptedEngine([DONE]), adapter="")
    agent = Agent(engine=ScriptedEngine([DONE]))
    with pytest.raises(ConfigurationError, match=r"got 5 \(an int\)"):
        await agent.run("a", adapter=5)
    data = {**RunState("r", "t", [], [1]).to_dict(), "adapter": ["x"]}
    with pytest.raises(ValueError, match="malformed 'adapter'"):
        RunState.from_dict(data)


async def test_a_batch_task_may_name_its_adapter(tmp_path):
    seen = {}

    def model(request, turn):
        seen[request.session_id] = request.adapter
        return DONE

    tasks = [
        {"id": "plain", "task": "a"},
        {"id": "tuned", "task": "b", "settings": {"adapter": "tone"}},
    ]
    engine = FunctionEngine(model)
    summary = await run_batch(
        tasks, lambda: Agent(engine=engine, adapter="support"), tmp_path / "r.jsonl"
    )
    assert summary.failed == 0
    assert seen == {"plain": "support", "tuned": "tone"}


def test_cli_adapter_goes_to_the_run_and_its_trace(tmp_path):
    (tmp_path / "replies.json").write_text(json.dumps([DONE]))
    cmd = [sys.executable, "-m", "harmony_agent", "run", "hi", "--engine", "scripted:replies.json"]
    proc = subprocess.run(
        [*cmd, "--adapter", "support", "--trace", "t.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    header = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert header["adapter"] == "support"
