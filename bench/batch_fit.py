"""The largest per_device_train_batch_size that fits one GPU with long captions, the reasoner awake or asleep.

    python bench/batch_fit.py --sizes 16,24 --sleep-sizes 32,48     # one run per size, each on its own GPU

Each run is `bench/cro_step.py --mode lora` on one GPU (Qwen2.5-VL-3B-shape LoRA policy sampling with
TRL's colocated vLLM at 0.2 of the GPU, the 7B-shape reasoner in the same process at 0.3): SIZE
captions of --caption-tokens tokens per step (SIZE/4 prompts x 4), all in one forward/backward pass
(per_device_train_batch_size = SIZE), --steps steps; `--sleep-sizes` runs add `--sleep`
(`reasoner_sleep`). As many runs at once as there are GPUs. A run fits when all its steps end; it
does not when it runs out of GPU memory. Printed per run: fits / out of memory, peak GPU memory
(nvidia-smi, sampled every 0.5 s), torch's peak and the step time; then per mode the largest size
that fitted and the smallest that did not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (held open together while chosen)."""
    import contextlib
    import socket

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,24", help="per_device_train_batch_size values, reasoner awake")
    parser.add_argument(
        "--sleep-sizes", default="32,48", help="values with the reasoner asleep (reasoner_sleep)"
    )
    parser.add_argument("--caption-tokens", type=int, default=4096)
    parser.add_argument("--reasoner-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="2: the second reward call wakes the reasoner "
                        "after a backward pass")  # fmt: skip
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    args = parser.parse_args()

    import torch
    from multi_gpu_cro import Sampler

    from racro_trl.toy.shapes import policy_dir

    runs = [(int(n), False) for n in args.sizes.split(",") if n] + [
        (int(n), True) for n in args.sleep_sizes.split(",") if n
    ]
    if any(n % 4 for n, _ in runs):
        raise SystemExit("every size must be a multiple of 4 (SIZE/4 prompts x 4 captions)")
    gpus = torch.cuda.device_count()
    if gpus < 1:
        raise SystemExit("needs a GPU")
    tmp = Path(os.environ.get("BENCH_TMP", "/tmp/bench"))
    policy = tmp / "qwen2.5-vl-3b"
    if not (policy / "config.json").exists():
        policy_dir(policy)
    print(f"{len(runs)} runs on {gpus} x {torch.cuda.get_device_name()}, {args.caption_tokens}-token captions, "
          f"{args.reasoner_tokens}-token answers, {args.steps} steps each", flush=True)  # fmt: skip

    results = []
    for start in range(0, len(runs), gpus):
        batch = runs[start : start + gpus]
        sampler = Sampler(None)  # peak memory per GPU, no server to read
        sampler.start()
        procs, ports = [], free_ports(len(batch))
        for gpu, (size, sleep) in enumerate(batch):
            work = tmp / f"fit-{size}-{'sleep' if sleep else 'awake'}"
            work.mkdir(parents=True, exist_ok=True)
            if not (work / "qwen2.5-vl-3b").exists():
                (work / "qwen2.5-vl-3b").symlink_to(policy)
            command = [
                sys.executable, str(HERE / "cro_step.py"), "--mode", "lora", "--prompts", str(size // 4),
                "--captions", "4", "--per-device", str(size), "--caption-tokens", str(args.caption_tokens),
                "--reasoner-tokens", str(args.reasoner_tokens), "--steps", str(args.steps),
                *(["--sleep"] if sleep else []),
            ]  # fmt: skip
            log = work / "run.log"
            # TRL's colocated vLLM takes MASTER_PORT, else the first free of 29500, ...: runs started together
            # all found 29500 free and all but one failed to bind it (EADDRINUSE, seen on 4 H200s).
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "BENCH_TMP": str(work),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[gpu])}  # fmt: skip
            print(f"$ CUDA_VISIBLE_DEVICES={gpu} {' '.join(command[1:])}  (log: {log})", flush=True)
            procs.append((gpu, size, sleep, log, subprocess.Popen(command, env=env, stdout=log.open("w"),
                                                                   stderr=subprocess.STDOUT)))  # fmt: skip
        for gpu, size, sleep, log, proc in procs:
            try:
                code = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "timeout"
            text = log.read_text(errors="replace")
            steps = [
                line for line in text.splitlines() if line.startswith("STEP ") and "step" not in line[5:12]
            ]
            oom = "out of memory" in text.lower() or "OutOfMemoryError" in text
            outcome = (
                "fits"
                if code == 0 and len(steps) == args.steps
                else "out of memory"
                if oom
                else f"failed ({code})"
            )
            results.append((size, sleep, outcome, steps, gpu, log))
        sampler.stop.set()
        sampler.join()
        for size, sleep, outcome, steps, gpu, log in results[start:]:
            fields = steps[-1].split() if steps else []
            step_s, torch_peak = (fields[2], fields[7]) if len(fields) >= 9 else ("-", "-")
            print(f"size {size:>3} reasoner {'asleep' if sleep else 'awake ':<6}: {outcome:<14} peak used "
                  f"{sampler.gpu_peak.get(gpu, 0) / 1024:6.1f} GiB (nvidia-smi), torch peak {torch_peak} GiB, last step "
                  f"{step_s} s, steps done {len(steps)}", flush=True)  # fmt: skip
            if outcome.startswith("failed"):
                print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))

    for sleep in (False, True):
        mine = [(n, o) for n, s, o, *_ in results if s == sleep]
        if not mine:
            continue
        fit = [n for n, o in mine if o == "fits"]
        oom = [n for n, o in mine if o == "out of memory"]
        print(f"FIT reasoner {'asleep' if sleep else 'awake'}: largest that fitted "
              f"{max(fit) if fit else 'none tried'}, smallest out of memory {min(oom) if oom else 'none tried'}")  # fmt: skip


if __name__ == "__main__":
    main()
