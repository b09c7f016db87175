"""`make bench`: the benchmarks this machine can run, each printing its measured ratios.

On a CUDA machine: the reward path vs standalone vLLM vs transformers (R1-Distill-Qwen-7B shape)
and one CRO step (Qwen2.5-VL-3B shape, LoRA). Without one: prepare-data throughput and the CPU
smoke run of the reward-path script (tiny models; its ratios are not the GPU figures).
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run(*args: str) -> None:
    print(f"\n$ python {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, *args], check=True)


def main() -> None:
    import torch

    if torch.cuda.is_available():
        run(str(HERE / "reward_throughput.py"), "--requests", "512", "--max-tokens", "512")
        run(str(HERE / "cro_step.py"), "--mode", "lora")
    else:
        run(str(HERE / "prepare_data.py"), "--rows", "2000")
        run(str(HERE / "reward_throughput.py"), "--tiny")


if __name__ == "__main__":
    main()
