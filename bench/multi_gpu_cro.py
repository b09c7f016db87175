"""CRO on several GPUs: where the reasoner and the policy's sampler live, the policy sharded with ZeRO-3.

    python bench/multi_gpu_cro.py                                  # reasoner served on GPU 0, training on 1..N-1
    python bench/multi_gpu_cro.py --server-dp 2                    # served with --data-parallel-size 2 on GPUs 0-1
    python bench/multi_gpu_cro.py --layout shared                  # served on GPU 0, training on all N GPUs
    python bench/multi_gpu_cro.py --layout colocate --overlap off  # no server: each rank its own reasoner engine
    python bench/multi_gpu_cro.py --layout served-policy           # reasoner on GPU 0, `trl vllm-serve` on 1, training on 2..N-1

Layouts (the policy's captions are sampled by TRL's colocated vLLM unless said otherwise):
- dedicated: the reasoner served on GPUs 0..K-1 (K = --server-dp), training on the others;
- shared: the reasoner served on GPU 0, training on every GPU;
- colocate: no server; every rank holds an in-process reasoner engine (`reasoner_backend: vllm`);
- served-policy: the reasoner served on GPUs 0..K-1, the policy's sampler served by `trl vllm-serve`
  (`vllm_mode: server`) on GPU K, training on the others.

1. `vllm serve` of a DeepSeek-R1-Distill-Qwen-7B-shaped reasoner (dummy weights) on GPU 0; its
   standalone throughput through the `openai` backend, at the concurrency a training step sends
   (ranks x captions per rank) and at 512 requests.
2. `accelerate launch --config_file configs/accelerate/zero3.yaml recipes/cro.py --config <recipe>`
   where the recipe is recipes/qwen2.5-vl-3b/cro.yaml with shortened lengths, a random
   Qwen2.5-VL-3B-shaped policy, `reasoner_backend: openai` and captions restricted to printable
   single-byte tokens (racro_trl/toy/shapes.py: a caption of n tokens reaches the reasoner as n tokens).
   Sampled every 0.5 s meanwhile: each GPU's memory (nvidia-smi) and the server's generated tokens
   and running requests (its Prometheus /metrics).
3. Printed: each rank's share of the policy's parameters, the step time split (TRL's step_time,
   the recipe's time/generation_s, time/logprob_s and time/reward_s), peak memory per GPU, the
   server's throughput while it was busy during training vs standalone, and the saved 16-bit
   checkpoint reloaded.

`--overlap both` (default) trains twice on the same server, `reasoner_overlap: false` then true,
and prints the overlap goal: the overlapped step at most (sequential step - min(reward, log-probs))
+ 10%, step means over the steps after the first. Each run ends with a `LAYOUT {json}` line: its
step split, captions per second, reasoner tokens per second and peak memory per GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
REPO = Path(__file__).resolve().parents[1]


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus metric's samples (all label sets)."""
    return sum(float(m) for m in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class Sampler(threading.Thread):
    """Every `period` s: memory used per GPU (MiB) and the server's generated tokens / running requests."""

    def __init__(self, url: str | None, period: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.period, self.stop = url, period, threading.Event()
        self.gpu_peak: dict[int, float] = {}
        self.server: list[tuple[float, float, float]] = []  # (time, generation tokens total, running)

    def run(self) -> None:
        import httpx

        while not self.stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout
            for line in out.strip().splitlines():
                index, used = (float(x) for x in line.split(","))
                self.gpu_peak[int(index)] = max(self.gpu_peak.get(int(index), 0.0), used)
            if self.url is None:  # no server (colocate layout): memory only
                time.sleep(self.period)
                continue
            try:
                text = httpx.get(f"{self.url}/metrics", timeout=2).text
                self.server.append(
                    (
                        time.monotonic(),
                        metric(text, "vllm:generation_tokens_total"),
                        metric(text, "vllm:num_requests_running"),
                    )
                )
            except httpx.HTTPError:
                pass
            time.sleep(self.period)

    def busy_throughput(self) -> tuple[float, float, float, float]:
        """(tokens generated, seconds with requests running, tokens/s over them, most requests at once)."""
        tokens = seconds = 0.0
        for (t0, g0, r0), (t1, g1, r1) in itertools.pairwise(self.server):
            if r0 > 0 or r1 > 0:
                tokens, seconds = tokens + g1 - g0, seconds + t1 - t0
        most = max((r for _, _, r in self.server), default=0.0)
        return tokens, seconds, tokens / max(seconds, 1e-9), most


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe(args, policy: Path, reasoner: Path, url: str | None, out_dir: Path, tmp: Path, overlap: bool,
           policy_url: str | None = None) -> Path:  # fmt: skip
    """recipes/qwen2.5-vl-3b/cro.yaml with the bench's models, servers and shortened lengths."""
    import yaml
    from transformers import AutoTokenizer

    from racro_trl.toy.shapes import printable_token_ids

    config = yaml.safe_load((REPO / "recipes/qwen2.5-vl-3b/cro.yaml").read_text())
    config.update(
        model_name_or_path=str(policy),
        dataset_name=str(REPO / "data/sample"),
        attn_implementation="sdpa",
        reasoner_max_tokens=args.reasoner_tokens,
        max_completion_length=args.caption_tokens,
        per_device_train_batch_size=args.per_device,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        max_steps=args.steps,
        save_strategy="no",  # the final save_model writes the gathered 16-bit weights
        report_to="none",
        vllm_gpu_memory_utilization=args.policy_vllm_memory,
        vllm_max_model_length=4096,  # the policy's colocated engine: prompt + caption, not the config's 128k
        output_dir=str(out_dir),
        generation_kwargs={"allowed_token_ids": printable_token_ids(AutoTokenizer.from_pretrained(policy))},
        reasoner_overlap=overlap,
    )
    if url is None:  # every rank its own reasoner engine, dummy weights of the 7B shape
        config.update(
            reasoner_backend="vllm",
            reasoner_model=str(reasoner),
            reasoner_engine_kwargs={"load_format": "dummy"},
            reasoner_max_model_len=4096,
            reasoner_gpu_memory_utilization=args.reasoner_memory,
            reasoner_seed=0,
        )
    else:
        config.update(reasoner_backend="openai", reasoner_url=url + "/v1", reasoner_model="reasoner")
    if policy_url is not None:
        config.update(vllm_mode="server", vllm_server_base_url=policy_url)
    path = tmp / f"cro-bench-{args.layout}-overlap-{overlap}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(args, policy, reasoner, url, policy_url, out_dir, tmp, roles, standalone, overlap) -> dict:
    """One training run (with the servers up): prints its table and a `LAYOUT {json}` line; returns the
    step means after the first step."""
    train_gpus = roles["training"]
    sampler = Sampler(url)
    config = recipe(args, policy, reasoner, url, out_dir, tmp, overlap, policy_url)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config,
        "--num_processes", str(len(train_gpus)), "--main_process_port", str(free_port()),
        "recipes/cro.py", "--config", str(config),
    ]  # fmt: skip
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, train_gpus)),
        "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}",
    }
    train_log = tmp / f"train-{args.layout}-overlap-{overlap}.log"
    print(f"$ CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {' '.join(launch[2:])}  (log: {train_log})")
    sampler.start()
    start = time.perf_counter()
    with train_log.open("w") as out:
        run = subprocess.run(launch, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    sampler.stop.set()
    print(f"accelerate launch: {len(train_gpus)} rank(s) on GPUs {train_gpus}, exit {run.returncode} "
          f"in {time.perf_counter() - start:.0f}s")  # fmt: skip
    text = train_log.read_text()
    for line in text.splitlines():
        if "partitioned by ZeRO-3" in line:
            print(line.split(" WARNING ")[-1])
    if run.returncode != 0:
        print(text[-8000:])
        raise SystemExit(run.returncode)

    state = json.loads((out_dir / "trainer_state.json").read_text())
    print(f"layout {args.layout}, reasoner_overlap: {overlap}")
    print(
        f"{'step':>4} {'step_s':>7} {'generation_s':>12} {'logprob_s':>9} {'reward_s':>9} {'reasoner_s':>10} "
        f"{'rest_s':>7} {'caption_len':>11}"
    )
    logged = [h for h in state["log_history"] if "loss" in h]
    for h in logged:
        gen, lp, rew = (h.get(f"time/{k}_s", 0.0) for k in ("generation", "logprob", "reward"))
        print(f"{h['step']:>4} {h['step_time']:>7.1f} {gen:>12.1f} {lp:>9.1f} {rew:>9.1f} "
              f"{h.get('caption_reasoner/reasoner_seconds', 0.0):>10.1f} {h['step_time'] - gen - lp - rew:>7.1f} "
              f"{h['completions/mean_length']:>11.0f}")  # fmt: skip
    peak = {i: round(mib / 1024, 1) for i, mib in sorted(sampler.gpu_peak.items())}
    print("peak memory used per GPU (nvidia-smi, GiB):", peak)
    later = logged[1:] or logged
    means = {
        key: sum(h.get(name, 0.0) for h in later) / len(later)
        for key, name in (
            ("step", "step_time"), ("generation", "time/generation_s"), ("logprob", "time/logprob_s"),
            ("reward", "time/reward_s"), ("reasoner", "caption_reasoner/reasoner_seconds"),
            ("engine_tok_s", "caption_reasoner/reasoner_tokens_per_second"),
        )
    }  # fmt: skip
    if url is not None:
        tokens, seconds, rate, most = sampler.busy_throughput()
        n = args.per_device * len(train_gpus)
        print(f"server during training: {tokens:.0f} output tokens in {seconds:.1f}s with requests running = "
              f"{rate:.0f} tok/s, at most {most:.0f} requests at once; standalone at {n}: "
              f"{standalone[n]:.0f} tok/s (ratio {rate / standalone[n]:.2f})")  # fmt: skip
        if len(train_gpus) > 1:
            print(f"one rank sends at most {args.per_device} requests at once: {most:.0f} running at once means "
                  f"{'several ranks were served concurrently' if most > args.per_device else 'no overlap was seen'}")  # fmt: skip
    else:  # each rank's engine answers its own captions at once: rank 0's rate times the ranks
        rate = means["engine_tok_s"] * len(train_gpus)
        print(f"in-process reasoners: rank 0's engine {means['engine_tok_s']:.0f} tok/s while answering; "
              f"x {len(train_gpus)} engines = {rate:.0f} tok/s")  # fmt: skip
    captions = args.per_device * len(train_gpus)
    summary = {
        "layout": args.layout, "gpus": roles, "overlap": overlap, "captions_per_step": captions,
        "per_device": args.per_device, "caption_tokens": args.caption_tokens, "reasoner_tokens": args.reasoner_tokens,
        **{f"{k}_s": round(v, 1) for k, v in means.items() if k != "engine_tok_s"},
        "backward_and_rest_s": round(means["step"] - means["generation"] - means["logprob"] - means["reward"], 1),
        "captions_per_s": round(captions / means["step"], 2), "reasoner_tok_s": round(rate),
        "peak_gib": peak, "device": subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.splitlines()[0],
    }  # fmt: skip
    print("LAYOUT", json.dumps(summary), flush=True)
    return means


def start_server(command: list[str], gpus: list[int], log: Path) -> subprocess.Popen:
    print(f"$ CUDA_VISIBLE_DEVICES={','.join(map(str, gpus))} {' '.join(command[1:])}  (log: {log})")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layout", choices=["dedicated", "shared", "colocate", "served-policy"], default="dedicated"
    )
    parser.add_argument("--server-dp", type=int, default=1, help="the reasoner server's --data-parallel-size")
    parser.add_argument("--accelerate-config", default="configs/accelerate/zero3.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--per-device", type=int, default=8, help="captions per rank per step")
    parser.add_argument("--caption-tokens", type=int, default=256)
    parser.add_argument("--reasoner-tokens", type=int, default=512)
    parser.add_argument("--server-memory", type=float, help="default 0.85 dedicated, 0.25 shared")
    parser.add_argument("--policy-vllm-memory", type=float, help="default 0.3 dedicated, 0.15 shared")
    parser.add_argument(
        "--reasoner-memory", type=float, default=0.3, help="colocate: each rank's reasoner engine"
    )
    parser.add_argument("--standalone-requests", type=int, default=512, help="the larger standalone load")
    parser.add_argument("--overlap", choices=["both", "on", "off"], default="both",
                        help="reasoner_overlap of the training run(s); both: off, then on")  # fmt: skip
    args = parser.parse_args()
    shared = args.layout == "shared"
    args.server_memory = args.server_memory or (0.25 if shared else 0.85)
    args.policy_vllm_memory = args.policy_vllm_memory or (0.15 if shared else 0.3)

    import torch

    from racro_trl.reasoning import prompts as P
    from racro_trl.reasoning.reasoners import OpenAIReasoner, Sampling
    from racro_trl.toy.shapes import policy_dir, reasoner_dir, wait_healthy

    gpus = list(range(torch.cuda.device_count()))
    k = args.server_dp
    roles = {
        "dedicated": {"reasoner": gpus[:k], "training": gpus[k:]},
        "shared": {"reasoner": gpus[:1], "training": gpus},
        "colocate": {"training": gpus},
        "served-policy": {"reasoner": gpus[:k], "policy_sampler": gpus[k : k + 1], "training": gpus[k + 1 :]},
    }[args.layout]
    if not roles["training"] or any(len(v) < (k if r == "reasoner" else 1) for r, v in roles.items()):
        raise SystemExit(
            f"layout {args.layout} with --server-dp {k} needs more than the {len(gpus)} GPU(s) here"
        )
    tmp = Path(os.environ.get("BENCH_TMP", "/tmp/bench"))
    reasoner = reasoner_dir(tmp / "r1-distill-qwen-7b")
    policy = tmp / "qwen2.5-vl-3b"
    if not (policy / "config.json").exists():
        policy_dir(policy)
    servers, url, policy_url = [], None, None
    try:
        if "reasoner" in roles:
            server_cmd = [
                sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(reasoner),
                "--served-model-name", "reasoner", "--load-format", "dummy", "--max-model-len", "4096",
                "--port", str(args.port), "--gpu-memory-utilization", str(args.server_memory),
                *(["--data-parallel-size", str(k)] if k > 1 else []),
            ]  # fmt: skip
            url = f"http://127.0.0.1:{args.port}"
            servers.append(
                (url, start_server(server_cmd, roles["reasoner"], tmp / "server.log"), tmp / "server.log")
            )
        if "policy_sampler" in roles:
            port = free_port()
            policy_cmd = [
                sys.executable, "-m", "trl.scripts.vllm_serve", "--model", str(policy), "--port", str(port),
                "--gpu_memory_utilization", str(args.server_memory), "--max_model_len", "4096",
            ]  # fmt: skip
            policy_url = f"http://127.0.0.1:{port}"
            log = tmp / "policy-server.log"
            servers.append((policy_url, start_server(policy_cmd, roles["policy_sampler"], log), log))
        start = time.perf_counter()
        for server_url, server, log in servers:
            wait_healthy(server_url, server, log)
            print(f"{server_url} healthy after {time.perf_counter() - start:.0f}s")

        standalone = {}
        if url is not None:
            client = OpenAIReasoner(url + "/v1", concurrency=512)
            caption = "A red circle is left of two blue squares; a line joins them at an angle. " * 8
            chats = [
                P.reasoner_reward_messages(
                    f"Caption {i}. {caption}"[: args.caption_tokens], "How many squares?"
                )
                for i in range(512)
            ]
            sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=args.reasoner_tokens)
            client.generate(chats[:32], 1, Sampling(max_tokens=16))  # warm-up
            step_requests = args.per_device * len(roles["training"])
            for n in sorted({step_requests, args.standalone_requests}):
                start = time.perf_counter()
                tokens = client.generate(chats[:n], 1, sampling).tokens
                seconds = time.perf_counter() - start
                standalone[n] = tokens / seconds
                print(f"server standalone, {n} concurrent requests: {tokens} output tokens in "
                      f"{seconds:.1f}s = {standalone[n]:.0f} tok/s")  # fmt: skip

        runs = {"off": [False], "on": [True], "both": [False, True]}[args.overlap]
        means = {}
        for overlap in runs:
            out_dir = tmp / f"multi-gpu-cro-{args.layout}-overlap-{overlap}"
            means[overlap] = train(
                args, policy, reasoner, url, policy_url, out_dir, tmp, roles, standalone, overlap
            )
        if len(means) == 2:
            seq, ovl = means[False], means[True]
            goal = (seq["step"] - min(seq["reward"], seq["logprob"])) * 1.1
            print(f"overlap: sequential step {seq['step']:.1f}s (reward {seq['reward']:.1f}s, log-probs "
                  f"{seq['logprob']:.1f}s), overlapped {ovl['step']:.1f}s (reward wait {ovl['reward']:.1f}s); "
                  f"ratio {ovl['step'] / seq['step']:.3f}; goal <= {goal:.1f}s: {'met' if ovl['step'] <= goal else 'MISSED'}")  # fmt: skip

        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(out_dir, dtype=torch.bfloat16)
        print(
            f"saved 16-bit checkpoint reloads: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters"
        )
    finally:
        for _, server, _ in servers:
            server.terminate()
        for _, server, _ in servers:
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
