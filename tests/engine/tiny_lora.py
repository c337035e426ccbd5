"""A planted LoRA adapter for the tiny gpt-oss of ``tiny_gptoss``, made at test time with peft.

The base model's planted steps ``a -> b`` live in ``lm_head[b][k]`` (``k`` the hidden dimension
that ``a``'s embedding fills). The adapter is a low-rank update of ``lm_head`` that reads the
same dimension and writes a larger logit to another token, so greedy decoding after ``a``
yields the adapter's token instead of ``b``: the test sees whether the adapter was applied.
Nothing here is ever committed: the adapter is written to a temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: the adapter's steps: after 2000 (base: 2001, then <|return|>) comes 3333
REDIRECT = {2000: 3333}


def plant_adapter(model_dir: Path, out_dir: Path, redirect: dict[int, int] = REDIRECT) -> Path:
    """A PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) on
    ``lm_head`` of the model in ``model_dir`` that makes each ``a`` of ``redirect`` lead to
    its value; written to ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssForCausalLM

    model = GptOssForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    embed = model.model.embed_tokens.weight
    rank = len(redirect)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["lm_head"], lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    head = peft_model.base_model.model.lm_head
    a_weight, b_weight = head.lora_A["default"].weight, head.lora_B["default"].weight
    with torch.no_grad():
        a_weight.zero_()
        b_weight.zero_()
        for i, (token, target) in enumerate(redirect.items()):
            k = int(embed[token].abs().argmax())
            a_weight[i, k] = 1.0
            b_weight[target, i] = 8.0  # twice the planted +4 of the base step
    peft_model.save_pretrained(out_dir, save_embedding_layers=False)
    return out_dir


def adapter_to_gguf(adapter_dir: Path, model_dir: Path, out: Path, sources: Path) -> Path:
    """llama.cpp's ``convert_lora_to_gguf.py`` (from ``sources``) on the adapter."""
    env = {**os.environ, "PYTHONPATH": str(sources / "gguf-py"), "NO_LOCAL_GGUF": ""}
    cmd = [sys.executable, str(sources / "convert_lora_to_gguf.py"), str(adapter_dir)]
    cmd += ["--base", str(model_dir), "--outfile", str(out), "--outtype", "bf16"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"convert_lora_to_gguf failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return out
