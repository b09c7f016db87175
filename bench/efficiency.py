"""The per-phase efficiency table of one CRO step on one GPU: one `bench/cro_step.py --standalone` run
per setting, each phase against its limit.

    python bench/efficiency.py                         # every setting this GPU's memory holds
    python bench/efficiency.py --only 3b-zero2         # one setting (one device call: ~7 min each)
    python bench/efficiency.py --table                 # print the table of the settings done so far
    python bench/efficiency.py --tiny                  # CPU smoke run of the plumbing (tiny models)

Each run's figures are written to OUT/<setting>.json and a setting already there is not run again, so
the table can be filled over several calls of a time-limited machine. The limits: policy sampling and
the reward (the reasoner) against standalone vLLM on the same model, shape and batch in the same run
(`--standalone`); log-probs and backward + optimizer as achieved TFLOP/s (2 x parameters per token) over
the GPU's dense bf16 peak. Step 1 (engine start, compilation) is left out of every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Setting:
    name: str
    what: str
    accelerate_config: str | None  # configs/accelerate/<name>.yaml, one process; None: plain python
    args: tuple[str, ...]
    gib: int  # the GPU memory it needs (measured peaks, with margin)


LONG = ("--caption-tokens", "2048", "--reasoner-tokens", "4096", "--per-device", "8")
SETTINGS = (
    Setting("3b-zero3-offload", "3B, full, ZeRO-3 + CPU offload (today's one-GPU launch)", "zero3_offload",
            ("--mode", "full"), 70),
    Setting("3b-zero2", "3B, full, ZeRO-2: optimizer on the GPU, engines 0.1 + 0.18", "zero2",
            ("--mode", "full", "--policy-vllm-memory", "0.1", "--reasoner-memory", "0.18"), 130),
    Setting("3b-zero3-offload-long", "3B, full, ZeRO-3 + offload, 2,048-token captions, 4,096-token answers",
            "zero3_offload", ("--mode", "full", *LONG), 70),
    Setting("7b-lora", "7B, LoRA, engines 0.25 + 0.25", None,
            ("--policy", "7b", "--mode", "lora", "--policy-vllm-memory", "0.25", "--reasoner-memory", "0.25"), 75),
)  # fmt: skip


def run(setting: Setting, out: Path, steps: int, timeout: int, tiny: bool) -> None:
    target = out / f"{setting.name}.json"
    bench = [str(HERE / "cro_step.py"), *setting.args, "--steps", str(steps), "--json", str(target)]
    bench += ["--tiny"] if tiny else ["--standalone"]
    if setting.accelerate_config and not tiny:
        launcher = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--config_file",
                    f"configs/accelerate/{setting.accelerate_config}.yaml"]  # fmt: skip
    else:
        launcher = []
    log = out / f"{setting.name}.log"
    print(f"$ python {' '.join(launcher + bench)}  (log: {log})", flush=True)
    with open(log, "w") as handle:
        try:
            code = subprocess.run([sys.executable, *launcher, *bench], stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = f"timed out after {timeout} s"
    if code != 0 or not target.exists():
        tail = log.read_text(errors="replace").splitlines()[-5:]
        print(f"{setting.name}: failed ({code}); last lines of {log}:\n  " + "\n  ".join(tail), flush=True)


def summary(result: dict) -> dict:
    """Medians over the steps after the first, leaving out a profiled step."""
    steps = [s for s in result["steps"][1:] if not s.get("profiled")] or result["steps"][-1:]
    median = {k: statistics.median(s[k] for s in steps) for k in steps[0] if isinstance(steps[0][k], float)}
    peak = result["peak_tflops"]
    limits = {  # each phase's share of its limit
        "policy sampling": result["vs_standalone"].get("sampling"),
        "reward (reasoner)": result["vs_standalone"].get("reward"),
        "log-probs": median["logps_tflops"] / peak,
        "backward + optimizer": median["train_tflops"] / peak,
    }
    return {"median": median, "limits": limits}


def table(out: Path) -> str:
    def share(value):
        return "n/a" if value is None else f"{value:.2f}"

    lines = [
        "| setting | step s | sampling s (x standalone vLLM) | reward s (x standalone vLLM) | log-probs s (TFLOP/s, "
        "share of peak) | backward + optimizer s (TFLOP/s, share) | peak GiB (torch / device) | furthest from its "
        "limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    device = None
    for setting in SETTINGS:
        path = out / f"{setting.name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        device = result["device"]
        s = summary(result)
        m, lim = s["median"], s["limits"]
        furthest = min((v, k) for k, v in lim.items() if v is not None)
        lines.append(
            f"| {setting.name}: {setting.what} | {m['total_s']:.1f} | {m['sampling_s']:.1f} ({share(lim['policy sampling'])}) "
            f"| {m['reward_s']:.1f} ({share(lim['reward (reasoner)'])}) | {m['logps_s']:.1f} ({m['logps_tflops']:.0f}, "
            f"{lim['log-probs']:.0%}) | {m['train_s']:.1f} ({m['train_tflops']:.0f}, {lim['backward + optimizer']:.0%}) "
            f"| {m['peak_torch_gib']:.1f} / {m['device_used_gib']:.1f} | {furthest[1]} ({furthest[0]:.2f}) |"
        )  # fmt: skip
    lines.append(f"\nDevice: {device}; medians over steps 2 and on; limits: standalone vLLM on the same batch, "
                 f"and the dense bf16 peak (`--peak-tflops`).")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/efficiency"))
    parser.add_argument(
        "--only", nargs="*", choices=[s.name for s in SETTINGS], help="run these settings only"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=560, help="seconds per setting before it is stopped")
    parser.add_argument("--table", action="store_true", help="print the table of what is done; run nothing")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: the first setting on tiny models")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        if args.tiny:
            todo = SETTINGS[:1]
        else:
            import torch

            if not torch.cuda.is_available():
                sys.exit("bench/efficiency.py needs a GPU (or --tiny for the CPU smoke run)")
            gib = torch.cuda.get_device_properties(0).total_memory / 2**30
            todo = [s for s in SETTINGS if (s.name in args.only if args.only else s.gib <= gib)]
            for s in SETTINGS:
                if s not in todo and not args.only:
                    print(f"{s.name}: left out, needs ~{s.gib} GiB of GPU memory ({gib:.0f} here)")
        for setting in todo:
            if (args.out / f"{setting.name}.json").exists():
                print(f"{setting.name}: done already ({args.out / setting.name}.json)")
                continue
            run(setting, args.out, args.steps, args.timeout, args.tiny)
    print(table(args.out))


if __name__ == "__main__":
    main()
