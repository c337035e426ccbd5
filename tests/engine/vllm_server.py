"""vLLM on this CPU, shared by the engine tests and ``bench/bench_engines.py``: the engine
settings for the CPU build, and a ``vllm serve`` process on 127.0.0.1 for the HTTP engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

# vLLM's CPU build: bf16, no CUDA graphs, a short context, a small KV cache
CPU_ARGS: dict[str, Any] = {
    "dtype": "bfloat16",
    "enforce_eager": True,
    "max_model_len": 2048,
    "gpu_memory_utilization": 0.1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_server(
    model: str, *, gpu: bool = False, timeout: float = 300, tokenizer: bool = False
) -> Iterator[str]:
    """``vllm serve MODEL`` on a free port, token ids only (no tokenizer unless ``tokenizer``:
    grammars need one), cached-token counts reported; yields the base URL
    (``http://127.0.0.1:PORT/v1``) once ``/health`` answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    cmd += [] if tokenizer else ["--skip-tokenizer-init"]
    cmd += ["--enable-prompt-tokens-details"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if not gpu:
        for key, value in CPU_ARGS.items():
            flag = "--" + key.replace("_", "-")
            cmd += [flag] if value is True else [flag, str(value)]
    with open(os.devnull, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the vLLM server exited with {proc.returncode} before it was ready; "
                    f"run `{' '.join(cmd)}` to see why"
                )
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server was not healthy after {timeout:g} s")
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
