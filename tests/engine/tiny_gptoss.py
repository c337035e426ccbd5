"""A tiny random ``GptOssForCausalLM`` built at test time, with planted token chains.

Random weights almost never sample ``<|call|>`` or ``<|return|>``. For each planted step
``a -> b`` the embedding of ``a`` becomes ``4·e_k`` and ``lm_head[b][k]`` gets ``+4`` (``k`` a
fresh hidden dimension), so greedy decoding after ``a`` yields ``b`` exactly — in vLLM as in
transformers. Nothing here is ever committed: the model is written to a temporary directory.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

CHAIN_STOP_CALL = [1000 + i for i in range(10)] + [200012]  # 1000 -> ... -> 1009 -> <|call|>
CHAIN_STOP_RETURN = [2000, 2001, 200002]  # 2000 -> 2001 -> <|return|>
ASSISTANT = 173781  # the last token of every agent prompt: <|start|>assistant
CALL_TEXT = (
    '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"city":"Oslo"}<|call|>'
)


def chains(encode) -> list[list[int]]:
    """The planted chains; the call chain starts at the end of any agent prompt."""
    call = [ASSISTANT, *encode(CALL_TEXT)]
    return [CHAIN_STOP_CALL, CHAIN_STOP_RETURN, call]


def build(
    out_dir: Path, planted: list[list[int]], eos: tuple[int, ...] = (200002, 199999, 200012)
) -> Path:
    """Write the model to ``out_dir``. ``eos``: the ids vLLM stops on when a request names
    no stop ids (a benchmark that wants full-length outputs leaves the Harmony stops out)."""
    import torch
    from transformers import GenerationConfig, GptOssConfig, GptOssForCausalLM

    torch.manual_seed(0)
    cfg = GptOssConfig(
        num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"],
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=201088,
        hidden_size=64,
        intermediate_size=64,
        head_dim=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=128,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 150000.0,
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "original_max_position_embeddings": 4096,
            "truncate": False,
        },
        eos_token_id=eos[0],
        pad_token_id=199999,
        bos_token_id=199998,
        tie_word_embeddings=False,
    )
    model = GptOssForCausalLM(cfg).to(torch.bfloat16).eval()
    embed = model.model.embed_tokens.weight
    head = model.lm_head.weight
    steps = {}
    for chain in planted:
        for a, b in itertools.pairwise(chain):
            if steps.setdefault(a, b) != b:
                raise ValueError(f"token {a} would need two successors")
    if len(steps) > cfg.hidden_size:
        raise ValueError("more planted steps than hidden dimensions")
    with torch.no_grad():
        for k, (a, b) in enumerate(steps.items()):
            embed[a] = 0
            embed[a, k] = 4.0
            head[b, k] += 4.0
    model.generation_config = GenerationConfig(
        bos_token_id=199998,
        eos_token_id=list(eos),
        pad_token_id=199999,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    return out_dir


def write_tokenizer(out_dir: Path) -> Path:
    """Write gpt-oss's tokenizer (o200k_base plus the Harmony special tokens, built from the
    vocabulary the agent loads) to ``out_dir``, for vLLM features that need one (grammars)."""
    import tiktoken_ext.openai_public as openai_public
    from harmony_agent._encoding import VOCAB_FILE, load_encoding
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    enc = load_encoding()
    specials = sorted(enc.special_tokens_set, key=lambda t: enc.encode(t, allowed_special="all")[0])
    first = enc.encode(specials[0], allowed_special="all")[0]
    ids = [enc.encode(t, allowed_special="all")[0] for t in specials]
    if ids != list(range(first, first + len(ids))):
        raise ValueError("the Harmony special tokens are not one contiguous id range")
    # o200k's split pattern, without loading (or downloading) its vocabulary a second time
    loader = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: {}
    try:
        pattern = openai_public.o200k_base()["pat_str"]
    finally:
        openai_public.load_tiktoken_bpe = loader
    vocab = Path(os.environ["TIKTOKEN_ENCODINGS_BASE"]) / VOCAB_FILE  # set by load_encoding
    converted = TikTokenConverter(
        vocab_file=str(vocab), pattern=pattern, extra_special_tokens=specials
    ).converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converted, eos_token="<|return|>", pad_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(out_dir)
    return out_dir
