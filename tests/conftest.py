"""Shared fixtures: tiny models built once per session, one vLLM reasoner engine per session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# `make test` runs two pytest-xdist workers, one test file at a time each (`--dist loadfile`: the
# module-scoped runs and engines stay on one worker), the longest files first.
LONGEST_FIRST = [
    "test_control", "test_training_ops", "test_learning", "test_train", "test_zero3", "test_hub",
    "test_overlap", "test_handoff", "test_evaluation", "test_reasoner_outage", "test_openai_backend", "test_wandb",
    "test_reward_integrity", "test_prepare", "test_rewards", "test_judge",
]  # fmt: skip


def pytest_configure(config):
    """Under xdist the tiny models are built here, once, before the workers start, and shared through
    RACRO_TINY_MODELS; the reader's server starts here too (RACRO_READER_URL). (Measured on 2 cores: the workers as they are, each process with every core,
    ran the suite in 16 min; one thread per process, or one core per worker, took longer; building
    the colour task's models beside the first tests doubled the build's CPU time.)"""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("RACRO_TINY_MODELS"):
        import shutil
        import tempfile

        from racro_trl.toy.colour_task import build_reader
        from racro_trl.toy.tiny import build_tiny_models

        shared = tempfile.mkdtemp(prefix="racro-tiny-")
        config.add_cleanup(lambda: shutil.rmtree(shared, ignore_errors=True))
        # One reader server for both workers (each would start its own: ~1 CPU-minute), started as soon
        # as the reader exists, so that it comes up while the captioner trains, and awaited by the
        # first test that needs it (reader_server).
        reader = build_reader(
            Path(shared) / "reader", build_tiny_models(shared, colour_task=False)["reasoner"]
        )
        if not os.environ.get("RACRO_READER_URL"):
            log = Path(shared) / "server.log"
            server, url = start_server(reader_command(reader), log)
            config.add_cleanup(lambda: stop_server(server))
            os.environ["RACRO_READER_URL"], os.environ["RACRO_READER_LOG"] = url + "/v1", str(log)
        build_tiny_models(shared)  # the captioner (the rest is there)
        os.environ["RACRO_TINY_MODELS"] = shared


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file stays


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from racro_trl.toy.tiny import build_tiny_models

    # RACRO_TINY_MODELS: a folder `racro make-tiny --out` wrote, shared by pytest processes side by side
    return build_tiny_models(
        os.environ.get("RACRO_TINY_MODELS") or tmp_path_factory.mktemp("tiny"), colour_task=False
    )


@pytest.fixture(scope="session")
def colour_models(tiny_models) -> dict[str, Path]:
    """The colour task's reader reasoner and warm-started captioner, beside the tiny models (~2 min)."""
    from racro_trl.toy.tiny import build_tiny_models

    return build_tiny_models(tiny_models["policy"].parent)


@pytest.fixture(scope="session")
def colour_data() -> Path:
    path = REPO / "data" / "colour"
    assert (path / "train.parquet").exists(), (
        "the shipped colour task is missing (racro make-sample-data --task colour)"
    )
    return path


def start_server(command: list[str], log: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a vLLM server command (it gets ``--host 127.0.0.1 --port <free>``): (process, base URL)."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    import torch

    if torch.cuda.is_available():
        # A test that built an engine in the worker set this (spawn_vllm_workers); a server keeps its own layout.
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    else:
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


@pytest.fixture(scope="session")
def reader_server(colour_models, tmp_path_factory):
    """The ``/v1`` URL of the reader's server on 127.0.0.1: the one `make test` starts for both workers
    (RACRO_READER_URL), else one for this session."""
    if os.environ.get("RACRO_READER_URL"):
        url = os.environ["RACRO_READER_URL"]
        wait_healthy(url.removesuffix("/v1"), Path(os.environ.get("RACRO_READER_LOG", "/dev/null")))
        yield url
        return
    with vllm_server(
        reader_command(colour_models["reader"]), tmp_path_factory.mktemp("server") / "server.log"
    ) as url:
        yield url + "/v1"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    path = REPO / "data" / "sample"
    assert (path / "train.parquet").exists(), "the shipped sample data is missing (racro make-sample-data)"
    return path


@pytest.fixture(scope="session")
def vllm_reasoner(tiny_models):
    """One in-process vLLM engine on the tiny reasoner for the whole session (~40 s to start)."""
    from racro_trl.reasoning.reasoners import build_reasoner

    reasoner = build_reasoner(
        "vllm",
        str(tiny_models["reasoner"]),
        max_model_len=1024,
        enforce_eager=True,
        gpu_memory_utilization=0.3,
    )
    yield reasoner
    reasoner.close()


@pytest.fixture(scope="session")
def vllm_mllm(tiny_models):
    """An in-process vLLM engine on the tiny policy, for the session: engines built in one process share
    vLLM's distributed state, and one dropped while another is in use (a module fixture going out of
    scope) tears it down under the other (test_rewards failed after test_evaluation)."""
    from racro_trl.evaluation.pipeline import build_mllm

    return build_mllm(
        "vllm", str(tiny_models["policy"]), max_model_len=1024, enforce_eager=True, gpu_memory_utilization=0.3
    )


def racro(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the `racro` command (as `python -m racro_trl.tools.cli`) from the repository root."""
    return subprocess.run(
        [PYTHON, "-m", "racro_trl.tools.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_launch(
    accelerate_config: str,
    tiny_models: dict[str, Path],
    output_dir: Path,
    *extra: str,
    num_processes: int = 1,
    launcher: tuple[str, ...] = (),
    reasoner_model: str | None = None,
) -> list[str]:
    """`accelerate launch ... recipes/cro.py` on the tiny recipe and models, on a free rendezvous port;
    ``extra``: recipe overrides, ``launcher``: more `accelerate launch` flags."""
    return [
        PYTHON, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
        "--num_processes", str(num_processes), "--main_process_port", str(free_port()), *launcher,
        "recipes/cro.py", "--config", "recipes/tiny/cro.yaml", "--model_name_or_path", str(tiny_models["policy"]),
        "--reasoner_model", reasoner_model or str(tiny_models["reasoner"]), "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def colour_launch(
    colour_models: dict[str, Path],
    colour_data: Path,
    output_dir: Path,
    *extra: str,
    num_processes: int = 1,
    config: str | None = None,
    launcher: tuple[str, ...] | None = None,
) -> list[str]:
    """`accelerate launch recipes/cro.py --config recipes/tiny/cro_colour.yaml` (make demo's run) on the
    colour models; 2 processes use the DDP config unless ``config``; ``launcher``: more launch flags."""
    config = config or (
        "configs/accelerate/ddp.yaml" if num_processes > 1 else "configs/accelerate/single.yaml"
    )
    launcher = ("--main_process_port", str(free_port())) if launcher is None else launcher
    return [
        PYTHON, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(num_processes),
        *launcher, *(("--mixed_precision", "no") if num_processes > 1 else ()),
        "recipes/cro.py", "--config", "recipes/tiny/cro_colour.yaml", "--dataset_name", str(colour_data),
        "--model_name_or_path", str(colour_models["captioner"]), "--reasoner_model", str(colour_models["reader"]),
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


# The colour task's recipe: 100 logged steps of 32 captions.
STEPS, CAPTIONS = 100, 32


def logged_steps(output_dir) -> list[dict]:
    """The logged training steps (those with a reward) of a finished run."""
    from racro_trl.reporting.run_summary import load_log_history

    return [h for h in load_log_history(output_dir) if "reward" in h]


def assert_learned(output_dir) -> None:
    """The learning thresholds (:func:`racro_trl.toy.colour_task.learned`): over the last 5 steps, mean reward
    >= 0.8 and >= 0.4 above the first 5's, every colour's reward >= 0.6, and >= 90% of the captions
    well-formed (the reader's grammar). The grid of seeds, thread counts and model builds they were set on
    is in BENCHMARKS.md."""
    from racro_trl.toy.colour_task import verdict

    judged = verdict(output_dir)
    rewards = [round(h["reward"], 3) for h in judged["steps"]]
    assert len(judged["steps"]) == STEPS, rewards
    assert not judged["misses"], (judged["misses"], rewards, judged["late"])


# 2 ranks x 2 captions x 8 accumulation = the recipe's 32 captions (8 groups of 4) per optimizer step;
# with 2 captions per rank, every group of 4 is split 2 + 2 across the ranks.
TWO_RANKS = (
    "--per_device_train_batch_size",
    "2",
    "--steps_per_generation",
    "8",
    "--gradient_accumulation_steps",
    "8",
)


def served_colour_run(colour_models, colour_data, reader_server, out, *extra, num_processes=1) -> list[dict]:
    """The colour task run with the reader served by ``reader_server``; returns the logged steps."""
    served = ("--use_cpu", "true", "--reasoner_backend", "openai", "--reasoner_url", reader_server)
    command = colour_launch(
        colour_models, colour_data, out, "--save_strategy", "no", "--reasoner_model", "tiny-reader", *served,
        *extra, num_processes=num_processes,
    )  # fmt: skip
    code, log = run_logged(
        command, out.with_suffix(".log"), timeout=600, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    )
    assert code == 0, log[-6000:]
    return logged_steps(out)


def two_machines(command, log_dir: Path, gpus: bool = False, timeout: int = 600) -> list[str]:
    """Run ``command(launcher_flags)`` as two machines on this host, as README's multi-node commands
    do: two `accelerate launch` with ``--num_machines 2 --machine_rank 0/1 --main_process_ip
    127.0.0.1``, one process each (``gpus``: each machine on a GPU of its own); both must exit 0.
    Returns the machines' logs."""
    port = free_port()
    flags = ["--num_machines", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    logs = [log_dir / f"machine{rank}.log" for rank in (0, 1)]
    machines = [
        subprocess.Popen(
            command((*flags, "--machine_rank", str(rank))),
            cwd=REPO,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
            | ({"CUDA_VISIBLE_DEVICES": str(rank)} if gpus else {}),
        )
        for rank, log in enumerate(logs)
    ]
    try:
        codes = [machine.wait(timeout=timeout) for machine in machines]
    finally:
        for machine in machines:
            machine.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n---- machine 1 ----\n".join(text[-5000:] for text in texts)
    return texts


def assert_rewards_follow_ranks(output_dir, steps: list[dict], per_step: int) -> None:
    """Each rank scored half of every step's captions, and TRL's logged reward is the mean of all of
    them: the gather pairs every rank's rewards with its own captions."""
    ranks = [
        [json.loads(line) for line in (output_dir / "audit" / f"caption_reasoner-rank{rank}.jsonl").open()]
        for rank in (0, 1)
    ]
    for h in steps:
        step = [[r for r in records if r["step"] == h["step"] - 1] for records in ranks]
        assert [len(s) for s in step] == [per_step // 2] * 2
        assert h["reward"] == pytest.approx(sum(r["reward"] for s in step for r in s) / per_step, abs=1e-6)


def audit(output_dir) -> list[dict]:
    """Every audit record (one per scored caption) of a run, all ranks."""
    return [json.loads(line) for f in sorted((output_dir / "audit").glob("*.jsonl")) for line in f.open()]


def run_logged(command: list[str], log: Path, timeout: int, env: dict | None = None) -> tuple[int, str]:
    """Run ``command`` from the repository root with its output streamed to ``log``: (exit code, output).

    On timeout, every process under it running ``recipes/cro.py`` first gets SIGUSR1, on which the
    recipe prints its Python stacks, so the failure shows where a stuck run was.
    """
    import psutil

    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            before = log.read_text()
            children = psutil.Process(proc.pid).children(recursive=True)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    if any(arg.endswith("recipes/cro.py") for arg in child.cmdline()):
                        child.send_signal(signal.SIGUSR1)
            time.sleep(5)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            proc.wait()
            stacks = log.read_text()[len(before) :]
            pytest.fail(
                f"{' '.join(command[:6])} ... timed out after {timeout} s; its log:\n{before[-4000:]}\n"
                f"---- its stacks (SIGUSR1) ----\n{stacks[:40000]}"
            )
    return proc.returncode, log.read_text()
