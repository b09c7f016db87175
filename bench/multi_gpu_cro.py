"""CRO on several GPUs: the reasoner served once on GPU 0, the policy sharded with ZeRO-3 on the rest.

    python bench/multi_gpu_cro.py [--steps 3]          # needs >= 2 GPUs

1. `vllm serve` of a DeepSeek-R1-Distill-Qwen-7B-shaped reasoner (dummy weights) on GPU 0;
   its standalone throughput through the `openai` backend (concurrent requests).
2. `accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes N-1 recipes/cro.py
   --config recipes/qwen2.5-vl-3b/cro.yaml` on GPUs 1..N-1 (Qwen2.5-VL-3B-shaped random policy,
   shortened lengths), reward through the server; then the saved 16-bit checkpoint is reloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
REPO = Path(__file__).resolve().parents[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path, seconds: int = 600) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise SystemExit(f"server not healthy:\n{log.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--caption-tokens", type=int, default=256)
    parser.add_argument("--reasoner-tokens", type=int, default=512)
    args = parser.parse_args()

    import torch
    from shapes import policy_dir, reasoner_dir

    from racro_trl.reasoners import OpenAIReasoner, Sampling

    gpus = torch.cuda.device_count()
    if gpus < 2:
        raise SystemExit(f"needs >= 2 GPUs, found {gpus}")
    tmp = Path(os.environ.get("BENCH_TMP", "/tmp/bench"))
    reasoner = reasoner_dir(tmp / "r1-distill-qwen-7b")
    policy = tmp / "qwen2.5-vl-3b"
    if not (policy / "config.json").exists():
        policy_dir(policy)
    log = tmp / "server.log"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    server_cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(reasoner), "--served-model-name",
        "reasoner", "--load-format", "dummy", "--max-model-len", "4096", "--port", str(args.port),
        "--gpu-memory-utilization", "0.85",
    ]  # fmt: skip
    server = subprocess.Popen(server_cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        start = time.perf_counter()
        wait_healthy(url, server, log)
        print(f"vllm serve (GPU 0) healthy in {time.perf_counter() - start:.0f}s", flush=True)
        client = OpenAIReasoner(url + "/v1", concurrency=256)
        chats = [
            [{"role": "user", "content": f"Caption {i}: " + "a red circle left of two squares " * 12}]
            for i in range(512)
        ]
        client.generate(chats[:32], 1, Sampling(max_tokens=16))
        start = time.perf_counter()
        client.generate(chats, 1, Sampling(max_tokens=args.reasoner_tokens))
        seconds = time.perf_counter() - start
        print(f"server standalone: {client.last_output_tokens} output tokens in {seconds:.1f}s = "
              f"{client.last_output_tokens / seconds:.0f} tok/s (512 concurrent requests)", flush=True)  # fmt: skip

        train_gpus = ",".join(str(i) for i in range(1, gpus))
        out_dir = tmp / "multi-gpu-cro"
        launch = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero3.yaml",
            "--num_processes", str(gpus - 1), "recipes/cro.py", "--config", "recipes/qwen2.5-vl-3b/cro.yaml",
            "--model_name_or_path", str(policy), "--dataset_name", "data/sample", "--attn_implementation", "sdpa",
            "--reasoner_backend", "openai", "--reasoner_url", url + "/v1", "--reasoner_model", "reasoner",
            "--reasoner_max_tokens", str(args.reasoner_tokens), "--max_completion_length", str(args.caption_tokens),
            "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1", "--steps_per_generation", "1",
            "--max_steps", str(args.steps), "--save_steps", str(args.steps), "--report_to", "none",
            "--vllm_gpu_memory_utilization", "0.3", "--output_dir", str(out_dir), "--log_completions", "false",
        ]  # fmt: skip
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": train_gpus,
            "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}",
        }
        start = time.perf_counter()
        run = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True)
        print(
            f"accelerate launch ({gpus - 1} process(es), GPUs {train_gpus}) exit {run.returncode} in {time.perf_counter() - start:.0f}s"
        )
        for line in (run.stdout + run.stderr).splitlines():
            if (
                "partitioned by ZeRO-3" in line
                or "Reward per step" in line
                or line.strip().startswith(("step ", "1 ", "2 ", "3 "))
            ):
                print(line)
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-6000:])
            return
        state = json.loads((out_dir / "trainer_state.json").read_text())
        for h in state["log_history"]:
            if "loss" in h:
                keep = (
                    "step",
                    "step_time",
                    "reward",
                    "caption_reasoner/reasoner_seconds",
                    "caption_reasoner/reasoner_tokens_per_second",
                )
                print("LOG", {k: round(h[k], 3) if isinstance(h[k], float) else h[k] for k in keep if k in h})
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(out_dir, dtype=torch.bfloat16)
        print(f"saved checkpoint reloads: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
