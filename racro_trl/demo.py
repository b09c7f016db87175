"""``make demo``: CRO learning a task on two CPU cores, with a real vLLM reasoner.

Builds the tiny models (``racro make-tiny``), runs the command a user runs on GPUs
(``accelerate launch recipes/cro.py --config recipes/tiny/cro_colour.yaml``) on the colour task of
:mod:`racro_trl.colour_task`, reloads the saved captioner with ``from_pretrained``, and prints (after the run's own reward table)
a few of the last step's captions beside their images' colours, the last steps' reward per colour and
share of well-formed captions, the first-versus-last summary and where the reward curve (PNG) is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


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

    from .colour_task import CHANCE, verdict
    from .data import build_sample_dataset
    from .report import (
        audit_summary,
        last_captions,
        load_log_history,
        reward_curve,
    )
    from .tiny import build_tiny_models

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
    train_start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    train_seconds = time.perf_counter() - train_start

    history = load_log_history(args.output_dir)
    AutoModelForImageTextToText.from_pretrained(args.output_dir)  # the saved captioner reloads
    judged = verdict(args.output_dir)
    first, last, late, misses = judged["first"], judged["last"], judged["late"], judged["misses"]
    audit_dir = Path(args.output_dir) / "audit"
    curve = reward_curve(
        history, Path(args.output_dir) / "reward_curve.png", CHANCE, "CRO on the colour task (tiny, CPU)"
    )
    print("\n================ racro-trl demo ================")  # the reward table is the run's, above
    print(audit_summary(audit_dir))
    print("a few captions of the last step, beside the colour their image shows:")
    for record in last_captions(audit_dir, 6):
        print(
            f"  {record['gold']:>6}: {record['caption']!r} -> reader boxed {record['extracted'][0]}, reward {record['reward']:.0f}"
        )
    per_colour = ", ".join(f"{c} {r:.2f}" for c, r in late["reward_by_answer"].items())
    print(f"last 5 steps: reward per colour {per_colour}; well-formed captions {late['well_formed']:.0%}")
    print(
        f"mean reward: first 5 steps {first:.2f} -> last 5 steps {last:.2f} (chance {CHANCE:.2f}): "
        + (
            "the captions learned to name, in words a person reads, the colour the reasoner needs"
            if not misses
            else f"not learned ({'; '.join(misses)})"
        )
    )
    print(f"reward curve: {curve}")
    print(f"final captioner (reloads with from_pretrained): {args.output_dir}")
    print(
        f"time: {train_seconds:.0f}s for accelerate launch (incl. vLLM reasoner start), "
        f"{time.perf_counter() - start:.0f}s total"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
