"""`make bench`: the benchmarks this machine can run, each printing its measured ratios.

On a CUDA machine: the reward path vs standalone vLLM vs transformers (R1-Distill-Qwen-7B shape),
CRO steps on one GPU (Qwen2.5-VL-3B shape with LoRA; then bench/efficiency.py, the per-phase table of
the full fine-tune's settings that the GPU's memory holds), the largest batch with 4096-token captions (bench/batch_fit.py) and, with two or three
GPUs, the served-reasoner run (bench/multi_gpu_cro.py); with four or more, its three 4-GPU layouts
(colocate, policy and reasoner served, reasoner served data-parallel) on all GPUs. On any
machine: grading and leak-detection quality on the labelled sets (bench/grading.py). Without a GPU: prepare-data throughput, the CPU smoke run of the reward-path script (tiny models; its
ratios are not the GPU figures) and the colour task's learning over seeds and torch thread counts
(bench/colour_grid.py).
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


FAILED: list[str] = []


def run(*args: str) -> None:
    """One bench; a failure is reported at the end and does not stop the others."""
    print(f"\n$ python {' '.join(args)}", flush=True)
    if subprocess.run([sys.executable, *args]).returncode != 0:
        FAILED.append(" ".join(args))


def main() -> None:
    import torch

    run(str(HERE / "grading.py"))  # CPU, seconds: labelled grading and leak sets
    if torch.cuda.is_available():
        run(str(HERE / "reward_throughput.py"))  # 1024 requests, answers <= 1024 tokens
        run(str(HERE / "cro_step.py"), "--mode", "lora")
        run(str(HERE / "efficiency.py"))  # per-phase table: 3B full (ZeRO-3 + offload, ZeRO-2), long, 7B LoRA
        run(str(HERE / "batch_fit.py"))  # 4096-token captions: the largest batch, reasoner awake / asleep
        gpus = torch.cuda.device_count()
        if gpus in (2, 3):
            run(str(HERE / "multi_gpu_cro.py"), "--layout", "shared" if gpus == 2 else "dedicated")
        if gpus >= 4:  # the three 4-GPU layouts of BENCHMARKS.md, 64 captions a step each
            layout = ["--steps", "2", "--caption-tokens", "256", "--reasoner-tokens", "2048",
                      "--policy-vllm-memory", "0.2", "--standalone-requests", "64"]  # fmt: skip
            for variant in (
                ["--layout", "colocate", "--overlap", "off", "--per-device", "16"],
                ["--layout", "served-policy", "--overlap", "on", "--per-device", "32"],
                ["--server-dp", "2", "--overlap", "on", "--per-device", "32"],
            ):
                run(str(HERE / "multi_gpu_cro.py"), *variant, *layout)
    else:
        run(str(HERE / "prepare_data.py"), "--rows", "2000")
        run(str(HERE / "reward_throughput.py"), "--tiny")
        # the colour task's learning over seeds and thread counts (the full grid of BENCHMARKS.md, 20 runs
        # and two model builds, is `python bench/colour_grid.py`: about 25 min on 2 cores)
        run(str(HERE / "colour_grid.py"), "--builds", "0", "--seeds", "0", "1")
    if FAILED:
        raise SystemExit("failed: " + "; ".join(FAILED))


if __name__ == "__main__":
    main()
