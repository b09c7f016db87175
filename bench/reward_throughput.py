"""Reward path vs standalone vLLM, and vLLM vs a naive transformers reasoner (GPU, dummy weights).

    python bench/reward_throughput.py                # R1-Distill-Qwen-7B shape, 1024 requests
    python bench/reward_throughput.py --tiny         # the tiny reasoner on CPU (a smoke run)

1. The same 1024 caption-scoring requests (reward prompt ~600 tokens, answers capped at
   --max-tokens) through ``CaptionReward`` (chat template, one batched call, grading, audit) and
   through ``vllm.LLM.generate`` on the very same prompts and engine: ratio of output tokens/s.
2. The same requests through ``CaptionReward`` with the reasoner served (``vllm serve`` of the same
   model on the same GPU, reached through the ``openai`` client, all requests in flight): ratio of
   its output tokens/s to the standalone engine's of step 1 (not with --tiny).
3. ``TransformersReasoner`` (HF ``generate``, batch 16) on a subset of the same requests: ratio of
   vLLM's tokens/s to it.

The reward path runs with everything on that a training run has: grading, the leak check, the
audit (every caption).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def captions(n: int, chars: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = "red blue green circle square triangle left right above below two three large small line angle".split()
    out = []
    for i in range(n):
        text = f"Caption {i}:"
        while len(text) < chars:
            text += " " + rng.choice(words)
        out.append(text[:chars])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny reasoner on CPU: checks the script, no figures"
    )
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument(
        "--caption-chars", type=int, default=430, help="~600-token reward prompts (byte tokenizer)"
    )
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--hf-requests", type=int, default=32)
    parser.add_argument("--hf-max-tokens", type=int, default=256)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--skip-hf", action="store_true", help="leave out the transformers comparison (3.)")
    args = parser.parse_args()

    import torch
    from vllm import SamplingParams

    from racro_trl.reasoning import prompts as P
    from racro_trl.reasoning.reasoners import Sampling, TokenCount, TransformersReasoner, VLLMReasoner
    from racro_trl.training.rewards import CaptionReward

    tmp = Path(tempfile.mkdtemp())
    if args.tiny:
        from racro_trl.toy.tiny import build_tiny_models

        model_dir = build_tiny_models(tmp / "tiny")["reasoner"]
        engine = {"max_model_len": 1024, "enforce_eager": True, "enable_prefix_caching": False}
        args.requests, args.max_tokens, args.caption_chars, args.hf_requests, args.hf_max_tokens = (
            32,
            16,
            200,
            8,
            8,
        )
    else:
        from racro_trl.toy.shapes import reasoner_dir

        model_dir = reasoner_dir(tmp / "r1-distill-qwen-7b")
        # No prefix caching: the second pass over the same prompts must not skip their prefill.
        engine = {
            "load_format": "dummy",
            "max_model_len": 4096,
            "dtype": "bfloat16",
            "enable_prefix_caching": False,
        }
    reasoner = VLLMReasoner(
        str(model_dir), gpu_memory_utilization=args.gpu_memory_utilization, seed=0, **engine
    )
    caps = captions(args.requests, args.caption_chars)
    questions = [
        "How many red circles are there? Please try to answer the question with short words or phrases if possible."
    ] * len(caps)
    chats = [P.reasoner_reward_messages(c, q) for c, q in zip(caps, questions, strict=True)]
    prompts = reasoner.prompts(chats)
    prompt_tokens = sum(len(reasoner.tokenizer(p)["input_ids"]) for p in prompts) / len(prompts)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)

    print(f"engine ready; {len(prompts)} prompts of ~{prompt_tokens:.0f} tokens", flush=True)
    reasoner.llm.generate(prompts[:64], params, use_tqdm=False)  # warm-up (CUDA graphs, caches)
    print("warm-up done", flush=True)
    start = time.perf_counter()
    outs = reasoner.llm.generate(prompts, params, use_tqdm=False)
    plain_s = time.perf_counter() - start
    plain_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print(f"standalone done in {plain_s:.1f}s", flush=True)

    reward = CaptionReward(counted := TokenCount(reasoner), sampling=sampling, audit_dir=tmp / "audit")
    completions = [[{"role": "assistant", "content": c}] for c in caps]
    start = time.perf_counter()
    rewards = reward(None, completions, question=questions, answer=["3"] * len(caps))
    reward_s = time.perf_counter() - start
    reward_tokens = counted.tokens
    assert len(rewards) == len(caps)

    plain_rate, reward_rate = plain_tokens / plain_s, reward_tokens / reward_s
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"device: {device}; reasoner {model_dir.name}; {args.requests} requests, prompt ~{prompt_tokens:.0f} tokens, max {args.max_tokens} new"
    )
    print(
        f"standalone vLLM.generate: {plain_tokens} output tokens in {plain_s:.1f}s = {plain_rate:.0f} tok/s"
    )
    print(
        f"CaptionReward (reward path): {reward_tokens} output tokens in {reward_s:.1f}s = {reward_rate:.0f} tok/s"
    )
    print(f"RATIO reward path / standalone vLLM: {reward_rate / plain_rate:.3f} (goal >= 0.90)")

    reasoner.close()
    del reasoner
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if not args.tiny:
        served_rate = served_reward_rate(model_dir, engine, args, completions, questions, sampling, tmp)
        print(
            f"RATIO served reward path (openai client) / standalone vLLM: {served_rate / plain_rate:.3f} (goal >= 0.90)"
        )

    if args.skip_hf:
        return
    # Naive transformers reasoner on a subset, same prompts.
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    hf = TransformersReasoner(model, tokenizer=AutoTokenizer.from_pretrained(model_dir), batch_size=16)
    hf_sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=args.hf_max_tokens)
    hf.generate(chats[:2], 1, Sampling(max_tokens=4))  # warm-up
    start = time.perf_counter()
    hf_tokens = hf.generate(chats[: args.hf_requests], 1, hf_sampling).tokens
    hf_s = time.perf_counter() - start
    hf_rate = hf_tokens / hf_s
    print(
        f"transformers generate (batch 16): {hf_tokens} output tokens in {hf_s:.1f}s = {hf_rate:.0f} tok/s ({args.hf_requests} requests, max {args.hf_max_tokens} new)"
    )
    print(f"RATIO vLLM reasoner / transformers reasoner: {reward_rate / hf_rate:.1f}x (goal >= 10x)")


def served_reward_rate(model_dir, engine, args, completions, questions, sampling, tmp) -> float:
    """Output tokens/s of CaptionReward through OpenAIReasoner against `vllm serve` of the same model."""
    import socket
    import subprocess

    from racro_trl.reasoning.reasoners import OpenAIReasoner, TokenCount
    from racro_trl.toy.shapes import wait_healthy
    from racro_trl.training.rewards import CaptionReward

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--port", str(port),
        "--host", "127.0.0.1", "--load-format", "dummy", "--dtype", "bfloat16", "--max-model-len",
        str(engine["max_model_len"]), "--gpu-memory-utilization", str(args.gpu_memory_utilization),
        "--no-enable-prefix-caching", "--seed", "0", "--max-num-seqs", "1024",
    ]  # fmt: skip
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed with the server)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, tmp / "server.log")
        client = TokenCount(OpenAIReasoner(f"http://127.0.0.1:{port}/v1", concurrency=len(completions)))
        reward = CaptionReward(client, sampling=sampling, audit_dir=tmp / "audit-served")
        reward(None, completions[:64], question=questions[:64], answer=["3"] * 64)  # warm-up
        client.tokens = 0  # the warm-up's left out
        start = time.perf_counter()
        reward(None, completions, question=questions, answer=["3"] * len(completions))
        seconds = time.perf_counter() - start
        rate = client.tokens / seconds
        print(
            f"CaptionReward, served (openai client, {len(completions)} in flight): {client.tokens} "
            f"output tokens in {seconds:.1f}s = {rate:.0f} tok/s"
        )
        client.close()
        return rate
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


if __name__ == "__main__":
    main()
