"""Local vLLM servers (a real OpenAI-compatible server subprocess on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .launch import free_port
from .paths import PYTHON, REPO


def start_server(command: list[str], log: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a vLLM server command (it gets ``--host 127.0.0.1 --port <free>``): (process, base URL)."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    import torch

    if not torch.cuda.is_available():
        # On CPU the server's engine core runs the model itself (vLLM's one-process executor) instead of
        # spawning a worker process that imports vLLM again and, after each request, spins for a second
        # on vLLM's shared-memory queue: the reader's server healthy after 36 s instead of 52 (35
        # CPU-seconds instead of 54, 2 cores).
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    return server, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, log: Path, server: subprocess.Popen | None = None, timeout: int = 300) -> None:
    """Wait until ``url/health`` answers; a server that dies or never answers fails the test with the
    end of its log."""
    deadline = time.monotonic() + timeout
    while True:
        if server is not None and server.poll() is not None:
            pytest.fail(f"server {url} exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server {url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(2)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


@contextlib.contextmanager
def vllm_server(command: list[str], log: Path, env: dict | None = None, timeout: int = 300):
    """Run a vLLM server command until ``/health`` answers; yields its base URL and stops it afterwards."""
    server, url = start_server(command, log, env)
    try:
        wait_healthy(url, log, server, timeout)
        yield url
    finally:
        stop_server(server)


def reader_command(reader: Path) -> list[str]:
    """A real vLLM OpenAI-compatible server (CPU) of the reader, served as ``tiny-reader`` (vllm-cpu's
    own `vllm` script cannot start; the module can)."""
    return [
        PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(reader), "--served-model-name",
        "tiny-reader", "--max-model-len", "1024", "--enforce-eager", "--dtype", "float32",
        # vllm-cpu fails a seeded request whose prefill is chunked ("CPU Generator does not use offset"):
        # a budget above one step's 32 requests x ~120 tokens keeps every prefill whole.
        "--max-num-batched-tokens", "16384",
    ]  # fmt: skip
