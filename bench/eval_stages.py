"""`racro eval`'s three stages at real shapes on one GPU (dummy weights): seconds per 100 samples.

    python bench/eval_stages.py                       # Qwen2.5-VL-3B captioner, R1-Distill-Qwen-7B reasoner
    python bench/eval_stages.py --mllm 7b

The real pipeline (``RacroPipeline``: prompts, chat templates, batching) on 100 questions with a
1024x768 image each (about 1,000 visual tokens), in-process vLLM engines for both models on the same
GPU. Dummy weights never stop early, so every output runs to its cap (``--mllm-tokens`` for the
tentative answer and the caption, ``--reasoner-tokens`` for the final answer), and MLLM outputs are
drawn from printable single-byte tokens so that the stage-3 prompt is as long as real text would
make it. The figures are therefore upper bounds for outputs of those lengths; a benchmark takes
about (its samples / 100) x the total.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mllm", choices=["3b", "7b"], default="3b")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--mllm-tokens", type=int, default=1024)
    parser.add_argument("--reasoner-tokens", type=int, default=4096)
    args = parser.parse_args()

    import torch

    from racro_trl.data.training_data import sample_rows
    from racro_trl.evaluation.pipeline import VLLMMLLM, Item, RacroPipeline
    from racro_trl.reasoning.reasoners import Sampling, TokenCount, VLLMReasoner
    from racro_trl.toy import shapes

    tmp = Path(tempfile.mkdtemp())
    text, vision = (
        (shapes.QWEN25_VL_3B_TEXT, shapes.QWEN25_VL_3B_VISION)
        if args.mllm == "3b"
        else (shapes.QWEN25_VL_7B_TEXT, shapes.QWEN25_VL_7B_VISION)
    )
    mllm_dir = shapes.policy_dir(tmp / "mllm", text, vision, weights=False)
    reasoner_dir = shapes.reasoner_dir(tmp / "reasoner")
    context = 2 * args.mllm_tokens + args.reasoner_tokens + 2048
    mllm = VLLMMLLM(
        str(mllm_dir), gpu_memory_utilization=0.4, max_model_len=context, max_pixels=2048 * 2048,
        load_format="dummy", dtype="bfloat16", enable_prefix_caching=False,
    )  # fmt: skip
    from transformers import AutoTokenizer

    mllm.extra_sampling = {
        "allowed_token_ids": shapes.printable_token_ids(AutoTokenizer.from_pretrained(mllm_dir))
    }
    reasoner = VLLMReasoner(
        str(reasoner_dir), gpu_memory_utilization=0.4, max_model_len=context, load_format="dummy",
        dtype="bfloat16", enable_prefix_caching=False,
    )  # fmt: skip
    rows = sample_rows(args.samples, seed=0)
    items = [Item([r["images"][0].resize((1024, 768))], r["question"]) for r in rows]
    mllm_sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=args.mllm_tokens)
    joint = Sampling(temperature=0.6, top_p=0.95, max_tokens=args.reasoner_tokens)
    reasoner = TokenCount(reasoner)
    pipeline = RacroPipeline(mllm, reasoner, mllm_sampling, joint)
    pipeline.tentative(items[:8]), pipeline.caption(items[:8])  # warm-up (CUDA graphs)
    pipeline.reason([i.question for i in items[:8]], ["a caption"] * 8, ["a tentative answer"] * 8)

    times = {}
    start = time.perf_counter()
    tentatives = pipeline.tentative(items)
    times["1 tentative answer"] = time.perf_counter() - start
    start = time.perf_counter()
    captions = pipeline.caption(items)
    times["2 caption"] = time.perf_counter() - start
    start = time.perf_counter()
    pipeline.reason([i.question for i in items], captions, tentatives)
    times["3 reasoner"] = time.perf_counter() - start
    reasoner_tokens = reasoner.tokens

    scale = 100 / args.samples
    print(f"device: {torch.cuda.get_device_name()}; captioner Qwen2.5-VL-{args.mllm.upper()} shape, reasoner "
          f"R1-Distill-Qwen-7B shape, dummy weights, bf16; {args.samples} samples, 1024x768 images")  # fmt: skip
    print(f"outputs: stages 1-2 {args.mllm_tokens} tokens each, stage 3 {args.reasoner_tokens} "
          f"({reasoner_tokens / args.samples:.0f} on average)")  # fmt: skip
    for stage, seconds in times.items():
        print(f"stage {stage}: {seconds * scale:.1f} s per 100 samples")
    total = sum(times.values()) * scale
    print(f"TOTAL {total:.1f} s per 100 samples")
    for name, n in (("MathVista_MINI", 1000), ("MathVerse_MINI_Vision_Only", 788), ("MathVision_MINI", 304),
                    ("WeMath", 1740), ("LogicVista", 448), ("DynaMath", 5010)):  # fmt: skip
        print(f"  {name} ({n} samples): about {total * n / 100 / 60:.0f} min")


if __name__ == "__main__":
    main()
