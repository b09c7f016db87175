"""``make demo``: tiny models, the shipped sample data, a few CRO steps with a real vLLM reasoner.

Runs the same command a user runs on GPUs (``accelerate launch recipes/cro.py --config ...``) on
tiny random models, then checks the saved checkpoint reloads and prints what happened.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _max_param_change(before: str | Path, after: str | Path) -> float:
    """Largest absolute parameter difference between two saved policies (reloaded from disk)."""
    from transformers import AutoModelForImageTextToText

    a = AutoModelForImageTextToText.from_pretrained(before).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(after).state_dict()
    return max(
        (a[k].float() - b[k].float()).abs().max().item() for k in a if k in b and a[k].is_floating_point()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-dir", default="tiny-models")
    parser.add_argument("--recipe", default="recipes/tiny/cro.yaml")
    parser.add_argument("--accelerate-config", default="configs/accelerate/single.yaml")
    parser.add_argument(
        "--output-dir", default="outputs/demo-cro", help="wiped at the start of every demo run"
    )
    args = parser.parse_args(argv)

    from .data import build_sample_dataset
    from .report import audit_summary, load_log_history, reward_table
    from .tiny import build_tiny_models

    start = time.perf_counter()
    paths = build_tiny_models(args.tiny_dir)
    if not Path("data/sample/train.parquet").exists():
        build_sample_dataset("data/sample")
    shutil.rmtree(args.output_dir, ignore_errors=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config,
        "recipes/cro.py", "--config", args.recipe,
        "--model_name_or_path", str(paths["policy"]), "--reasoner_model", str(paths["reasoner"]),
        "--output_dir", args.output_dir,
    ]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    train_start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    train_seconds = time.perf_counter() - train_start

    history = load_log_history(args.output_dir)
    checkpoints = sorted(Path(args.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    change = _max_param_change(paths["policy"], checkpoints[-1])
    print("\n================ racro-trl demo ================")
    print(reward_table(history))
    print(audit_summary(Path(args.output_dir) / "audit"))
    print(
        f"checkpoint {checkpoints[-1]} reloads with from_pretrained; largest policy parameter change {change:.3g}"
    )
    print(f"final model: {args.output_dir}")
    print(
        f"time: {train_seconds:.0f}s for accelerate launch (incl. vLLM reasoner start), {time.perf_counter() - start:.0f}s total"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
