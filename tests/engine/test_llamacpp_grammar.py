"""Structured final answers on llama.cpp: a lazy grammar triggered by the final header.

The live tests run a real llama-server and LlamaCppEngine (in process) on a tiny random
gpt-oss GGUF made at test time with one planted chain, ``<|start|>assistant`` →
``<|channel|>final<|message|>`` (the model writes the final header by itself, also when a
random ``<|channel|>`` comes up mid-analysis); everything else it writes is noise, so every
valid answer is the grammar's doing. With the grammar the JSON validates on every seed,
without it on none; before the header the ids are exactly the unconstrained ones. Marked
``llamacpp`` (``make test-llamacpp``). The stand-in tests at the end check the request bodies
and the error paths, and run with the core suite.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import pydantic
import pytest
from harmony_agent import Agent
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import MODEL_STOP_TOKEN_IDS
from harmony_agent.engine import GenerationRequest, LlamaServerEngine
from harmony_agent.engine._llama_grammar import (
    FINAL_TRIGGER,
    JSON_RULE,
    final_answer_grammar,
    harden_json_grammar,
)
from harmony_agent.errors import ConfigurationError, EngineError, EngineRequestError

from .structured_checks import IN_FINAL, SCHEMA, USER, final_json, valid

ENC = load_encoding()
SEEDS = range(20)
FREE_SEEDS = range(4)  # unconstrained runs go to max_tokens: fewer of them
IN_ANALYSIS = USER + "<|channel|>analysis<|message|>"
NAME_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}
# llama-cpp-python's schema converter leaves integer bounds out (its TODO); the in-process
# engine's answers are held to the rest of the schema, and validation checks the bounds
UNBOUNDED = {
    **SCHEMA,
    "properties": {**SCHEMA["properties"], "score": {"type": "integer"}},
}
MAX_TOKENS = 96


def ids(text: str) -> list[int]:
    return ENC.encode(text, allowed_special="all")


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def final_gguf(tmp_path_factory):
    """Random weights plus the one planted chain to the final header, as a GGUF. Its own
    model: the shared GGUF plants a tool call after ``<|start|>assistant``, and a token has
    one planted successor."""
    from .tiny_gguf import convert, write_tokenizer
    from .tiny_gptoss import ASSISTANT, build

    work = tmp_path_factory.mktemp("tiny-gguf-final")
    model_dir = build(work / "hf", [[ASSISTANT, *ids("<|channel|>final<|message|>")]])
    write_tokenizer(model_dir, work)
    return convert(model_dir, work / "tiny-gptoss-final.gguf")


@pytest.fixture(scope="module")
def server_url(final_gguf):
    from .tiny_gguf import llama_server

    with llama_server(final_gguf, slots=1, ctx=2048) as url:
        yield url


@pytest.fixture(scope="module")
async def server(server_url):
    async with LlamaServerEngine(server_url) as engine:
        assert engine.constrains_output
        yield engine


@pytest.fixture(scope="module")
async def local(final_gguf):
    from harmony_agent.engine import LlamaCppEngine

    engine = LlamaCppEngine(final_gguf, n_ctx=2048, n_threads=1)
    assert engine.constrains_output
    await engine.start()
    yield engine
    await engine.aclose()


@pytest.fixture(params=["server", "local"])
def engine(request):
    return request.getfixturevalue(request.param)


async def sample(engine, prompt: str, seed: int, schema, max_tokens=MAX_TOKENS) -> list[int]:
    request = GenerationRequest(
        prompt_ids=ids(prompt),
        max_tokens=max_tokens,
        temperature=1.0,
        seed=seed,
        output_schema=schema,
    )
    return [t async for chunk in engine.generate(request) for t in chunk.token_ids]


async def validity(
    engine, prompt: str, schema, seeds=SEEDS, against=SCHEMA
) -> tuple[int, list[str]]:
    head = "<|channel|>final<|message|>" if prompt == IN_FINAL else ""
    texts = [head + ENC.decode(await sample(engine, prompt, seed, schema)) for seed in seeds]
    bad = [t for t in texts if not valid(final_json(t), against)]
    return len(texts) - len(bad), bad


@pytest.mark.parametrize("prompt", [IN_FINAL, USER], ids=["prompt-in-final", "planted-header"])
@pytest.mark.anyio
@pytest.mark.llamacpp
@pytest.mark.slow
async def test_grammar_holds_on_every_seed(engine, prompt, capsys):
    against = SCHEMA if isinstance(engine, LlamaServerEngine) else UNBOUNDED
    constrained, texts = await validity(engine, prompt, SCHEMA, against=against)
    free, free_texts = await validity(engine, prompt, None, FREE_SEEDS, against=UNBOUNDED)
    name = type(engine).__name__
    with capsys.disabled():
        print(f"\n{name} {prompt[-20:]!r}: valid {constrained}/20 with, {free}/4 without")
    assert constrained == len(SEEDS), texts
    assert free == 0, free_texts


@pytest.mark.anyio
@pytest.mark.llamacpp
@pytest.mark.slow
async def test_samples_freely_until_the_final_header(engine):
    """In the analysis channel the grammar waits: the ids are the unconstrained ones (same
    seed) up to and including a final header, and a JSON answer that ends after such a header
    validates (the random model writes ``<|channel|>`` now and then, and the planted chain
    finishes the header)."""
    header = ids("<|channel|>final<|message|>")
    untouched, triggered, answered = 0, 0, 0
    for seed in range(8):
        with_grammar = await sample(engine, IN_ANALYSIS, seed, SCHEMA)
        without = await sample(engine, IN_ANALYSIS, seed, None)
        starts = [i for i in range(len(with_grammar)) if with_grammar[i : i + 3] == header]
        if not starts:
            assert with_grammar == without
            untouched += 1
            continue
        end = starts[0] + len(header)
        assert with_grammar[:end] == without[:end]
        assert with_grammar[end:] != without[end:]
        triggered += 1
        answer = with_grammar[end:]
        assert all(t < 199998 for t in answer[:-1])  # JSON text only
        if answer[-1] in (200002, 200012, 199999):  # finished (else it ran out of tokens)
            assert valid(ENC.decode(answer[:-1]), UNBOUNDED), ENC.decode(with_grammar)
            answered += 1
    name = type(engine).__name__
    print(f"{name} analysis: {untouched} free, {triggered} triggered, {answered} answered")
    assert untouched and answered  # seeds 0-7 give both on this model


@pytest.mark.anyio
@pytest.mark.llamacpp
@pytest.mark.slow
async def test_special_tokens_stay_out_of_json_strings(server_url, local):
    """llama.cpp matches a special token by its piece, which a JSON string takes. With
    ``<|end|>`` pushed up (logit bias), llama-server's plain ``json_schema`` grammar writes it
    inside the string on every seed; ours never does, and the random model alone writes
    none into a string in process either."""
    push = {"logit_bias": [[200007, 100]]}  # <|end|>: ends the Harmony message if sampled
    plain = hardened = 0
    async with (
        httpx.AsyncClient(timeout=120) as client,
        LlamaServerEngine(server_url, extra_body=push) as pushed,
    ):
        for seed in range(3):
            body = {"prompt": ids(IN_FINAL), "n_predict": 24, "temperature": 1.0, "top_k": 0}
            body.update({"top_p": 1.0, "min_p": 0.0, "seed": seed, "return_tokens": True})
            answer = await client.post(
                server_url + "/completion", json={**body, **push, "json_schema": NAME_SCHEMA}
            )
            plain += 200007 in answer.json()["tokens"]
            out = await sample(pushed, IN_FINAL, seed, NAME_SCHEMA, max_tokens=24)
            hardened += any(t >= 199998 for t in out[:-1])
    for seed in range(6):
        out = await sample(local, IN_FINAL, seed, NAME_SCHEMA, max_tokens=40)
        hardened += any(t >= 199998 for t in out[:-1])
    print(f"special tokens inside the string: {plain}/3 plain json_schema, {hardened}/9 ours")
    assert plain == 3  # the premise: the server's own grammar lets them through
    assert hardened == 0


class Review(pydantic.BaseModel):
    """A verdict with a score."""

    verdict: Literal["good", "bad"]
    score: int
    ok: bool


@pytest.fixture(params=["server", "local"])
async def fresh(request, final_gguf):
    """An engine with nothing cached: a prompt evaluated in one batch or reused from the cache
    gives slightly different logits, and the agent test's seed must mean the same draws."""
    if request.param == "server":
        from .tiny_gguf import llama_server

        with llama_server(final_gguf, slots=1, ctx=2048) as url:
            async with LlamaServerEngine(url) as engine:
                yield engine
    else:
        from harmony_agent.engine import LlamaCppEngine

        async with LlamaCppEngine(final_gguf, n_ctx=2048, n_threads=1) as engine:
            yield engine


@pytest.mark.anyio
@pytest.mark.llamacpp
@pytest.mark.slow
async def test_agent_gets_a_validated_output(fresh):
    """One agent run: the planted header, then the grammar's JSON. After the JSON the grammar
    lets each of the GGUF's end-of-generation ids through and the random model picks one at
    random; the agent reads an answer ended by ``<|endoftext|>`` as one ended by
    ``<|return|>``."""
    agent = Agent("Rate what the user says.", engine=fresh, temperature=1.0, seed=4)
    events = []
    result = await agent.run("Rate it.", output_type=Review, on_event=events.append)
    assert isinstance(result.output, Review)
    assert result.usage.turns == 1  # no repair: the grammar held the first answer
    assert not [e for e in events if e.type == "warning"]  # constrained: nothing to warn of
    finished = events[-1]
    assert finished.type == "run_finished" and finished.output == result.output.model_dump()
    assert Review.model_validate_json(result.final_text) == result.output
    turn = next(e for e in events if e.type == "turn_finished")
    assert turn.output_ids[:3] == tuple(ids("<|channel|>final<|message|>"))
    assert turn.output_ids[-1] in MODEL_STOP_TOKEN_IDS  # <|return|>, <|call|>, <|endoftext|>


@pytest.mark.anyio
@pytest.mark.llamacpp
@pytest.mark.slow
async def test_local_names_a_schema_it_cannot_convert(local):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(ConfigurationError, match=r"cannot turn the output schema.*missing"):
        await sample(local, USER, 0, schema, max_tokens=4)


# --- the grammar text and the request bodies (stand-in server; core suite) ---------------------

CONVERTED = "\n".join(
    [
        'char ::= [^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{4})',
        'name-kv ::= "\\"name\\"" space ":" space string',
        'root ::= "{" space name-kv space "}" # root',
        'space ::= | " "',
        'string ::= "\\"" char* "\\"" space',
        'tree ::= "[" root? "\\"root\\"" "]"',
    ]
)


def test_final_answer_grammar_renames_root_and_hardens_strings():
    grammar = final_answer_grammar(harden_json_grammar(CONVERTED))
    lines = grammar.splitlines()
    assert lines[0] == (
        'root ::= ("<|channel|>final<|message|>" | "<|channel|>final json<|message|>" | '
        f'"<|channel|>final <|constrain|>json<|message|>") {JSON_RULE}'
    )
    assert f'{JSON_RULE} ::= "{{" space name-kv space "}}" # root' in lines  # comment kept
    # a reference is renamed, the same word inside a literal is not
    assert f'tree ::= "[" {JSON_RULE}? "\\"root\\"" "]"' in lines
    assert sum(line.startswith("root ::=") for line in lines) == 1
    char = next(line for line in lines if line.startswith("char ::="))
    assert "<]" in char and '"<"+ ([^' in char and "<|]" in char
    assert FINAL_TRIGGER.startswith("(?:<\\|channel\\|>final<\\|message\\|>|")


def test_both_llama_cpp_engines_constrain_output():
    from harmony_agent.engine import LlamaCppEngine

    assert LlamaServerEngine("http://127.0.0.1:1").constrains_output
    assert LlamaCppEngine("model.gguf").constrains_output  # nothing loaded yet


def test_a_grammar_without_root_is_refused():
    with pytest.raises(ValueError, match="root rule"):
        harden_json_grammar('answer ::= "x"')


class GrammarStandIn:
    """llama-server's shapes: the schema probe reports ``generation_settings.grammar``."""

    def __init__(self, grammar=CONVERTED, status=200, error=None, chunks=None):
        self.grammar, self.status, self.error = grammar, status, error
        self.chunks = chunks or [
            {"content": "{}", "tokens": [90, 92], "stop": False, "tokens_predicted": 2},
            {"content": "", "tokens": [200002], "stop": False, "tokens_predicted": 3},
            {"content": "", "tokens": [], "stop": True, "stop_type": "eos", "tokens_predicted": 3},
        ]
        self.probes: list[dict] = []
        self.requests: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(200, json={"total_slots": 1, "default_generation_settings": {}})
        if request.url.path == "/lora-adapters":
            return httpx.Response(200, json=[])  # started without --lora
        body = json.loads(request.content)
        if "json_schema" in body:
            self.probes.append(body)
            if self.status != 200:
                return httpx.Response(self.status, json={"error": {"message": self.error}})
            return httpx.Response(
                200, json={"stop": True, "generation_settings": {"grammar": self.grammar}}
            )
        self.requests.append(body)
        if body.get("stream") is False:
            return httpx.Response(200, json=self.whole(body))
        stream = "".join(f"data: {json.dumps(c)}\n\n" for c in self.chunks)
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    def whole(self, body):
        return {"tokens": [92, 200002], "stop": True, "stop_type": "eos", "tokens_predicted": 2}


def stand_in_engine(stand_in, **kwargs) -> LlamaServerEngine:
    return LlamaServerEngine(
        "http://llama.test:8080",
        transport=httpx.MockTransport(stand_in),
        check_model=False,
        **kwargs,
    )


async def run_once(engine, prompt, schema=SCHEMA):
    request = GenerationRequest(prompt_ids=ids(prompt), max_tokens=16, output_schema=schema)
    return [t async for chunk in engine.generate(request) for t in chunk.token_ids]


@pytest.mark.anyio
async def test_turn_prompt_gets_the_lazy_grammar_and_the_schema_is_converted_once():
    stand_in = GrammarStandIn()
    async with stand_in_engine(stand_in) as engine:
        await run_once(engine, USER)
        await run_once(engine, USER)
    assert len(stand_in.probes) == 1  # cached per schema
    probe = stand_in.probes[0]
    assert probe["json_schema"] == SCHEMA and probe["n_predict"] == 0
    assert probe["cache_prompt"] is False
    body = stand_in.requests[0]
    assert body["grammar_lazy"] is True
    assert body["grammar_triggers"] == [{"type": 2, "value": FINAL_TRIGGER}]
    assert body["grammar"] == final_answer_grammar(harden_json_grammar(CONVERTED))
    assert "json_schema" not in body


@pytest.mark.anyio
async def test_prompt_in_the_final_message_gets_the_json_grammar_from_the_first_token():
    stand_in = GrammarStandIn()
    async with stand_in_engine(stand_in) as engine:
        await run_once(engine, IN_FINAL)
    body = stand_in.requests[0]
    assert body["grammar"] == harden_json_grammar(CONVERTED)
    assert "grammar_lazy" not in body and "grammar_triggers" not in body


@pytest.mark.anyio
async def test_no_schema_sends_no_grammar():
    stand_in = GrammarStandIn()
    async with stand_in_engine(stand_in) as engine:
        await run_once(engine, USER, schema=None)
    assert not stand_in.probes and "grammar" not in stand_in.requests[0]


@pytest.mark.anyio
async def test_a_schema_llama_server_cannot_convert_is_named():
    error = (
        "Field 'json_schema': \"json_schema\": JSON schema conversion failed:\nJSON schema "
        "error at #/properties/root: unsupported $ref #"
    )
    stand_in = GrammarStandIn(status=400, error=error)
    async with stand_in_engine(stand_in) as engine:
        with pytest.raises(
            ConfigurationError, match=r"(?s)cannot turn the output schema.*unsupported \$ref"
        ):
            await run_once(engine, USER)
    assert not stand_in.requests


@pytest.mark.parametrize(
    ("grammar", "message"),
    [("%llguidance {}\nstart: %json {}", "LLGuidance"), ("", "too old")],
)
@pytest.mark.anyio
async def test_a_server_whose_grammar_cannot_be_used_is_named(grammar, message):
    async with stand_in_engine(GrammarStandIn(grammar=grammar)) as engine:
        with pytest.raises(EngineRequestError, match=message):
            await run_once(engine, USER)


def gap_chunks(first: list[int], text: str) -> list[dict]:
    """``first`` streamed, then a chunk whose two missing ids cannot be rebuilt (its text
    names no vocabulary split) — the stream is dropped and the rest sampled again."""
    return [
        {"content": ENC.decode(first), "tokens": first, "stop": False, "tokens_predicted": 1},
        {"content": text, "tokens": [], "stop": True, "stop_type": "eos", "tokens_predicted": 3},
    ]


@pytest.mark.anyio
async def test_a_gap_before_any_final_header_resamples_with_the_same_grammar():
    stand_in = GrammarStandIn(chunks=gap_chunks(ids("Hi"), ""))
    async with stand_in_engine(stand_in) as engine:
        out = await run_once(engine, IN_ANALYSIS)
    assert out == [*ids("Hi"), 92, 200002]
    first, rest = stand_in.requests
    assert rest["stream"] is False and rest["prompt"] == [*ids(IN_ANALYSIS), *ids("Hi")]
    for key in ("grammar", "grammar_lazy", "grammar_triggers"):
        assert rest[key] == first[key]


@pytest.mark.anyio
async def test_a_gap_inside_a_structured_answer_fails_the_turn_clearly():
    stand_in = GrammarStandIn(chunks=gap_chunks(ids("{"), ""))
    async with stand_in_engine(stand_in) as engine:
        with pytest.raises(EngineError, match="inside a structured final answer"):
            await run_once(engine, IN_FINAL)
