"""Launching what a test runs: the `racro` command, `accelerate launch` of the recipe, two machines on one
host; every launch streams its output to a log (:func:`run_logged`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .paths import PYTHON, REPO


def racro(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the `racro` command (as `python -m racro_trl.tools.cli`) from the repository root, through
    :func:`run_logged` with its output and errors apart (tests parse the one and match the other)."""
    import tempfile

    command = [PYTHON, "-m", "racro_trl.tools.cli", *args]
    with tempfile.TemporaryDirectory(prefix="racro-") as folder:
        out, err = Path(folder) / "stdout.log", Path(folder) / "stderr.log"
        code, stdout = run_logged(command, out, timeout, errors=err)
        return subprocess.CompletedProcess(command, code, stdout, err.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_logged(
    command: list[str], log: Path, timeout: int, env: dict | None = None, errors: Path | None = None
) -> tuple[int, str]:
    """Run ``command`` from the repository root with its output streamed to ``log``: (exit code, output).
    ``errors``: stderr goes there instead of into ``log``.

    On timeout, every process under it running ``recipes/cro.py`` first gets SIGUSR1, on which the
    recipe prints its Python stacks, so the failure shows where a stuck run was.
    """
    import psutil

    with log.open("w") as out, contextlib.ExitStack() as stack:
        err = stack.enter_context(errors.open("w")) if errors else subprocess.STDOUT
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, env=env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            watched = errors or log  # where the stacks are printed (stderr)
            ranks = ranks_ready_for_stacks(proc)
            before = watched.read_text()
            for rank in ranks:
                with contextlib.suppress(psutil.Error):
                    rank.send_signal(signal.SIGUSR1)
            time.sleep(5)
            children = []
            with contextlib.suppress(psutil.Error):  # the run may have ended meanwhile
                children = psutil.Process(proc.pid).children(recursive=True)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            proc.wait()
            stacks = watched.read_text()[len(before) :]
            pytest.fail(
                f"{' '.join(command[:6])} ... timed out after {timeout} s; its log:\n{before[-4000:]}\n"
                f"---- its stacks (SIGUSR1) ----\n{stacks[:40000]}"
            )
    return proc.returncode, log.read_text()


def ranks_ready_for_stacks(proc: subprocess.Popen, grace: float = 30) -> list:
    """The processes under ``proc`` running ``recipes/cro.py``, once each has its SIGUSR1 handler in
    (the signal's bit in /proc's SigCgt mask): waits up to ``grace`` seconds for a rank to appear and
    get that far, then gives those that did. Signalled earlier, a rank dies of SIGUSR1 without a word:
    in CI (2 cores, another test beside it) a run stopped after 25 s had no stacks to show."""
    import psutil

    def ranks() -> list:
        found = []
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any(arg.endswith("recipes/cro.py") for arg in child.cmdline()):
                    found.append(child)
        return found

    def caught(rank) -> bool:
        with contextlib.suppress(OSError, IndexError):
            status = Path(f"/proc/{rank.pid}/status").read_text()
            mask = int(status.split("SigCgt:")[1].split()[0], 16)
            return bool(mask >> (signal.SIGUSR1 - 1) & 1)
        return False

    deadline = time.monotonic() + grace
    while True:
        found = ranks()
        ready = [rank for rank in found if caught(rank)]
        if (found and len(ready) == len(found)) or time.monotonic() > deadline or proc.poll() is not None:
            return ready
        time.sleep(0.5)


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
