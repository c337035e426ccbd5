"""The tiny random gpt-oss of ``tiny_gptoss`` as a GGUF, made at test time for llama.cpp.

Three steps, all offline: the Hugging Face model (planted chains, see ``tiny_gptoss``), a
``tokenizer.json`` for o200k_harmony rebuilt from the bundled ``o200k_base.tiktoken`` with
transformers' ``TikTokenConverter`` (llama.cpp's converter needs one, and recognises it as the
``gpt-4o`` pre-tokenizer), then llama.cpp's own ``convert_hf_to_gguf.py`` from the sources the
llama-cpp-python sdist vendors (``make setup-llamacpp`` links them at ``$VENV/llama.cpp``).
Nothing here is committed: every file goes to a temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .tiny_gptoss import build, chains

ONE_GAP_CHAR = "龘"  # o200k: [54462, 246]; 54462 alone is an incomplete UTF-8 sequence
CHAIN_ONE_GAP = [3000, 54462, 246, 200002]  # llama-server's stream skips 54462
LLAMA_CPP_ENV = "HARMONY_AGENT_LLAMA_CPP_SRC"
_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def llama_cpp_sources() -> Path:
    """The vendored llama.cpp tree (converter and gguf-py): ``$HARMONY_AGENT_LLAMA_CPP_SRC``,
    else ``<venv>/llama.cpp`` as ``make setup-llamacpp`` leaves it."""
    root = Path(os.environ.get(LLAMA_CPP_ENV) or Path(sys.prefix) / "llama.cpp")
    if not (root / "convert_hf_to_gguf.py").is_file():
        raise RuntimeError(
            f"no llama.cpp converter at {root}/convert_hf_to_gguf.py: run `make setup-llamacpp` "
            f"and the tests with .venv-llamacpp/bin/python, or set {LLAMA_CPP_ENV}"
        )
    return root


def llama_server_binary() -> Path:
    """``llama-server`` as ``make setup-llamacpp`` builds it (``<venv>/bin/llama-server``)."""
    path = Path(sys.prefix) / "bin" / "llama-server"
    if not path.exists():
        raise RuntimeError(f"no llama-server at {path}: run `make setup-llamacpp`")
    return path


def write_tokenizer(model_dir: Path, work_dir: Path) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json`` for o200k_harmony, into ``model_dir``."""
    from harmony_agent._encoding import VOCAB_FILE, load_encoding

    enc = load_encoding()  # also makes sure the vocabulary file is unpacked
    vocab = Path(os.environ["TIKTOKEN_ENCODINGS_BASE"]) / VOCAB_FILE
    # tiktoken reads o200k_base through its cache (keyed by the URL's sha1): fill the cache
    # with the bundled file, so the pattern and ranks come from tiktoken's own definition.
    cache = work_dir / "tiktoken-cache"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vocab, cache / hashlib.sha1(_TIKTOKEN_URL.encode()).hexdigest())
    from tiktoken_ext.openai_public import o200k_base
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        pattern = o200k_base()["pat_str"]
    finally:
        if before is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = before
    specials = [enc.decode([i]) for i in range(199998, 201088)]  # Harmony's names
    converted = TikTokenConverter(
        vocab_file=str(vocab), pattern=pattern, extra_special_tokens=specials
    ).converted()
    PreTrainedTokenizerFast(
        tokenizer_object=converted,
        bos_token="<|startoftext|>",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
    ).save_pretrained(model_dir)


def convert(model_dir: Path, out: Path, outtype: str = "bf16") -> Path:
    """llama.cpp's converter on ``model_dir`` (bf16 keeps the weights vLLM loads, bit for bit)."""
    src = llama_cpp_sources()
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py"), "NO_LOCAL_GGUF": ""}
    cmd = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(model_dir)]
    cmd += ["--outfile", str(out), "--outtype", outtype]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out


def build_gguf(work_dir: Path, encode, *, endless: bool = False) -> tuple[Path, Path]:
    """The tiny model with the agent chains plus the UTF-8 gap chain: (HF dir, GGUF path).

    ``endless``: the end-of-generation ids get all-zero ``lm_head`` rows, so greedy decoding
    never picks them (not even in the planted chains) and a benchmark's streams run their full
    length: llama.cpp always stops on them, where vLLM can be told not to."""
    model_dir = build(work_dir / "hf", [*chains(encode), CHAIN_ONE_GAP])
    if endless:
        _no_stops(model_dir)
    write_tokenizer(model_dir, work_dir)
    return model_dir, convert(model_dir, work_dir / "tiny-gptoss-bf16.gguf")


def _no_stops(model_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    for token in (199999, 200002, 200012):
        tensors["lm_head.weight"][token] = 0
    save_file(tensors, path, metadata={"format": "pt"})


@contextmanager
def llama_server(
    gguf: Path,
    *,
    slots: int = 2,
    ctx: int = 4096,
    threads: int = 1,
    args: tuple[str, ...] = (),
    timeout: float = 120,
) -> Iterator[str]:
    """``llama-server`` for ``gguf`` on a free 127.0.0.1 port (``ctx`` shared by ``slots``,
    ``args`` added to the command line); yields its base URL once ``/health`` answers, and
    stops it by its pid. One thread by default: the tiny model gains nothing from a second
    one, and on a busy 2-core machine two spinning threads cost 10-100x per token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(llama_server_binary()), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    cmd += [
        "-c",
        str(ctx),
        "-np",
        str(slots),
        "-t",
        str(threads),
        "--no-warmup",
        "--no-webui",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {proc.returncode}: {' '.join(cmd)}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not healthy after {timeout:g} s: {' '.join(cmd)}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
