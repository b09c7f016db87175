"""The ``racro`` command: tiny models, sample data, run reports.

Training itself is ``accelerate launch recipes/cro.py --config <yaml>`` (see README).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path


def _make_tiny(args) -> None:
    from .tiny import build_tiny_models

    paths = build_tiny_models(args.out, seed=args.seed, force=args.force, colour_task=not args.no_colour_task)
    for role, path in paths.items():
        print(f"{role}: {path}")


def _make_sample_data(args) -> None:
    from .data import build_sample_dataset

    out = args.out or ("data/sample" if args.task == "mixed" else "data/colour")
    rows = args.rows or (48 if args.task == "mixed" else 64)
    path = build_sample_dataset(out, n=rows, seed=args.seed, task=args.task)
    print(f"wrote {rows} rows to {path}")


def _prepare_data(args) -> None:
    from .prepare import PrepareOptions, prepare_virl39k

    options = PrepareOptions(
        drop_sources=tuple(args.drop_sources),
        keep_sources=tuple(args.keep_sources),
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        skip_bad=args.skip_missing,
        num_proc=args.num_proc,
    )
    dataset, summary = prepare_virl39k(args.src, args.out, options)
    print(summary.table())
    print(f"wrote {len(dataset)} rows to {args.out} (save_to_disk, parquet/ shards, prepare_summary.json)")
    if args.push_to_hub:
        dataset.push_to_hub(args.push_to_hub, private=args.private)
        print(f"pushed to the Hub: {args.push_to_hub}")


def _stage_models(args):
    """The MLLM and reasoner of ``infer`` / ``eval`` from the shared flags."""
    from .pipeline import JOINT_SAMPLING, MLLM_SAMPLING, RacroPipeline, build_mllm
    from .reasoners import build_reasoner

    mllm_kwargs = {
        "max_images": args.max_images,
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
    }
    if args.mllm_backend == "vllm":
        mllm_kwargs |= {
            "gpu_memory_utilization": args.mllm_gpu_memory_utilization,
            "tensor_parallel_size": args.mllm_tensor_parallel_size,
            "max_model_len": args.max_model_len,
            "enforce_eager": args.enforce_eager,
        }
    is_url = args.reasoner.startswith(("http://", "https://"))
    backend = args.reasoner_backend or ("openai" if is_url else "vllm")
    if is_url:
        reasoner = build_reasoner(
            "openai", args.reasoner_model, args.reasoner, max_retries=args.reasoner_max_retries
        )
    elif backend == "vllm":
        reasoner = build_reasoner(
            "vllm",
            args.reasoner,
            gpu_memory_utilization=args.reasoner_gpu_memory_utilization,
            tensor_parallel_size=args.reasoner_tensor_parallel_size,
            max_model_len=args.max_model_len,
            enforce_eager=args.enforce_eager,
        )
    else:
        reasoner = build_reasoner(backend, args.reasoner)
    mllm = build_mllm(args.mllm_backend, args.mllm, **mllm_kwargs)
    mllm_sampling = replace(MLLM_SAMPLING, max_tokens=args.max_tokens)
    joint_sampling = replace(JOINT_SAMPLING, max_tokens=args.max_tokens)
    return RacroPipeline(mllm, reasoner, mllm_sampling, joint_sampling)


def _infer(args) -> None:
    from PIL import Image

    from .pipeline import Item

    images = [Image.open(path).convert("RGB") for path in args.image]
    pipeline = _stage_models(args)
    result = pipeline.answer([Item(images, args.question)])[0]
    print(f"=== caption ===\n{result['caption']}\n")
    print(f"=== tentative answer (MLLM) ===\n{result['tentative']}\n")
    print(f"=== final answer (reasoner) ===\n{result['final']}\n")
    print(f"=== extracted answer === {result['answer']}")


def _eval(args) -> None:
    from .evaluation import evaluate, load_benchmark

    load_benchmark(args.data)  # a bad file fails before any model loads
    pipeline = _stage_models(args)
    summary = evaluate(
        pipeline,
        args.benchmark,
        args.data,
        args.out,
        mode=args.mode,
        mllm_name=args.mllm,
        reasoner_name=f"{args.reasoner}|{args.reasoner_model}",
        limit=args.limit,
        batch_size=args.batch_size,
    )
    print((Path(args.out) / f"{args.benchmark}_{args.mode}_summary.md").read_text())
    print(f"computed this run: {summary['computed']}; results in {args.out}")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mllm", required=True, help="the captioner: checkpoint path or Hub id (Qwen2.5-VL)")
    p.add_argument("--mllm-backend", choices=["vllm", "transformers"], default="vllm")
    p.add_argument(
        "--reasoner", required=True, help="reasoner checkpoint path / Hub id, or an OpenAI-compatible URL"
    )
    p.add_argument(
        "--reasoner-backend", choices=["vllm", "transformers"], help="for a checkpoint (default: vllm)"
    )
    p.add_argument("--reasoner-model", help="with a URL: the served model name (default: the first served)")
    p.add_argument("--reasoner-max-retries", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=8192, help="per stage (default: %(default)s)")
    p.add_argument(
        "--max-model-len", type=int, help="vLLM context length of both engines (default: the model's)"
    )
    p.add_argument("--max-images", type=int, default=1, help="images per prompt the MLLM engine allows")
    p.add_argument("--min-pixels", type=int, help="image area bounds for the MLLM processor")
    p.add_argument("--max-pixels", type=int)
    p.add_argument("--mllm-gpu-memory-utilization", type=float, default=0.4)
    p.add_argument("--reasoner-gpu-memory-utilization", type=float, default=0.4)
    p.add_argument("--mllm-tensor-parallel-size", type=int, default=1)
    p.add_argument("--reasoner-tensor-parallel-size", type=int, default=1)
    p.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs (faster start)")


def _export(args) -> None:
    from .export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, merge_lora=args.merge_lora, dtype=args.dtype)
    print(f"exported to {out}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=args.push_to_hub, commit_message="racro export")
        print(f"pushed to the Hub: {args.push_to_hub}")


def _report(args) -> None:
    from pathlib import Path

    from .report import audit_summary, load_log_history, reward_table

    print(reward_table(load_log_history(args.output_dir)))
    audit = Path(args.output_dir) / "audit"
    if audit.is_dir():
        print(audit_summary(audit))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="racro",
        description="RACRO / CRO tools. Train with: accelerate launch recipes/cro.py --config recipes/<...>.yaml",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "make-tiny",
        help="build tiny checkpoints locally (tests, demo): random policy + reasoner, and the colour task's "
        "reader reasoner and warm-started captioner (trained here with TRL's SFTTrainer, ~2 min on 2 cores)",
    )
    p.add_argument(
        "--out",
        default="tiny-models",
        help="folder for policy/, reasoner/, reader/, captioner/ (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if the folder already holds them")
    p.add_argument(
        "--no-colour-task", action="store_true", help="only the random policy and reasoner (seconds)"
    )
    p.set_defaults(func=_make_tiny)

    p = sub.add_parser(
        "make-sample-data",
        help="write a synthetic dataset: mixed shapes, colours and counts (data/sample), or the colour task "
        "CRO learns in `make demo` (data/colour)",
    )
    p.add_argument("--task", choices=("mixed", "colour"), default="mixed")
    p.add_argument(
        "--out", default=None, help="output folder (default: data/sample, or data/colour with --task colour)"
    )
    p.add_argument("--rows", type=int, default=None, help="rows (default: 48 mixed, 64 colour)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_sample_data)

    p = sub.add_parser(
        "prepare-data",
        help="ViRL39K release (39Krelease.parquet + images/) -> training dataset",
        description="Turn the ViRL39K release into the dataset recipes/cro.py trains on: drops text-only "
        "sources, resolves and checks images, bounds their area, places <image> tags, builds the caption prompt.",
    )
    p.add_argument(
        "--src",
        required=True,
        help="39Krelease.parquet, or the folder holding it and images/ (or images.zip)",
    )
    p.add_argument("--out", required=True, help="output folder (save_to_disk + parquet/ shards)")
    p.add_argument(
        "--drop-sources", nargs="*", default=["DeepScaleR"], help="sources to drop (default: %(default)s)"
    )
    p.add_argument("--keep-sources", nargs="*", default=[], help="keep only these sources (default: all)")
    p.add_argument(
        "--min-pixels", type=int, default=512 * 512, help="smallest image area (default: %(default)s)"
    )
    p.add_argument(
        "--max-pixels", type=int, default=2048 * 2048, help="largest image area (default: %(default)s)"
    )
    p.add_argument("--num-proc", type=int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="skip and count rows with a missing/unreadable image, empty answer or duplicate qid (default: fail)",
    )
    p.add_argument(
        "--push-to-hub", metavar="REPO", help="also push the dataset to this Hub repo (token: HF_TOKEN)"
    )
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private dataset repo")
    p.set_defaults(func=_prepare_data)

    p = sub.add_parser(
        "infer",
        help="answer one question about an image: tentative answer, caption, joint reasoning",
        description="The three RACRO stages for one image + question. Put the reasoner on other GPUs with "
        "`vllm serve` and pass its URL, or give a checkpoint to run it in-process.",
    )
    p.add_argument("--image", required=True, nargs="+", help="image file(s)")
    p.add_argument("--question", required=True)
    _add_model_flags(p)
    p.set_defaults(func=_infer)

    p = sub.add_parser(
        "eval",
        help="score a VLMEvalKit-format benchmark TSV through the three stages (cached, resumable)",
        description="Each stage is cached in --out: an interrupted run resumes, and a new reasoner re-runs "
        "stage 3 only. Scoring is rule-based (boxed answer, choice letter, math-verify), not a GPT judge.",
    )
    p.add_argument("--benchmark", required=True, help="a name for the reports, e.g. MathVista_MINI")
    p.add_argument("--data", required=True, help="the benchmark TSV (VLMEvalKit format, base64 images)")
    p.add_argument("--out", required=True, help="output folder (stage caches, results, summary, chart)")
    p.add_argument("--mode", choices=["full", "caption-only", "mllm-only"], default="full")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--batch-size", type=int, default=64, help="rows per stage batch (and per cache flush)")
    _add_model_flags(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "export",
        help="training output / checkpoint -> plain HF Qwen2.5-VL checkpoint (vLLM, transformers)",
        description="Full weights (incl. ZeRO-3 16-bit saves), LoRA adapters (with --merge-lora) and "
        "partitioned ZeRO-3 checkpoints (global_step*/, via zero_to_fp32) become one plain checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="output_dir or output_dir/checkpoint-N")
    p.add_argument("--out", required=True, help="new folder for the exported checkpoint")
    p.add_argument("--merge-lora", action="store_true", help="merge a LoRA adapter into its base model")
    p.add_argument("--dtype", default="bfloat16", help="weights dtype (default: %(default)s)")
    p.add_argument(
        "--push-to-hub", metavar="REPO", help="also upload to this Hub model repo (token: HF_TOKEN)"
    )
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=_export)

    p = sub.add_parser("report", help="print the reward table and audit summary of a training output_dir")
    p.add_argument("output_dir")
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"racro {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
