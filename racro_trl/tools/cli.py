"""The ``racro`` command: ``make-tiny``, ``make-sample-data``, ``repro-mini``, ``prepare-data``, ``infer``,
``eval``, ``table``, ``export`` and ``report`` (``--html``: the caption viewer).

Training itself is ``accelerate launch recipes/cro.py --config <yaml>`` (see README).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..evaluation.benchmarks import PAPER_BENCHMARKS
from .eval_models import (
    add_model_flags,
    build_mllm_from_args,
    build_reasoner_from_args,
    check_models,
    reasoner_labels,
    samplings,
)


def _make_tiny(args) -> None:
    from ..toy.tiny import build_tiny_models

    paths = build_tiny_models(args.out, seed=args.seed, force=args.force, colour_task=not args.no_colour_task)
    for role, path in paths.items():
        print(f"{role}: {path}")


def _make_sample_data(args) -> None:
    from ..data.training_data import build_sample_dataset

    out = args.out or f"data/{ {'mixed': 'sample'}.get(args.task, args.task) }"
    rows = args.rows or {"mixed": 48, "colour": 64, "tiles": 512}[args.task]
    path = build_sample_dataset(out, n=rows, seed=args.seed, task=args.task)
    print(f"wrote {rows} rows to {path}")


def _repro_mini(args) -> None:
    from ..mini.repro import main

    main(
        args.out,
        tuple(args.seeds),
        args.steps,
        eval_rows=args.eval_rows,
        sabotage=args.sabotage,
        gpu=args.gpu,
    )


def _prepare_data(args) -> None:
    from ..data.prepare import PrepareOptions, prepare_virl39k

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


def _infer(args) -> None:
    from PIL import Image

    check_models(args)

    from ..evaluation.pipeline import Item, RacroPipeline

    images = [Image.open(path).convert("RGB") for path in args.image]
    pipeline = RacroPipeline(
        build_mllm_from_args(args), build_reasoner_from_args(args, args.reasoner), *samplings(args)
    )
    result = pipeline.answer([Item(images, args.question)])[0]
    print(f"=== caption ===\n{result['caption']}\n")
    print(f"=== tentative answer (MLLM) ===\n{result['tentative']}\n")
    print(f"=== final answer (reasoner) ===\n{result['final']}\n")
    print(f"=== extracted answer === {result['answer']}")


def _eval(args) -> None:
    from ..evaluation.benchmarks import benchmark_file
    from ..evaluation.evaluate import BenchmarkError, evaluate_many, load_benchmark

    if bool(args.benchmark) == bool(args.benchmarks):
        raise BenchmarkError("give --benchmark NAME --data FILE, or --benchmarks A,B,... --data-dir DIR")
    if args.benchmark:
        if not args.data:
            raise BenchmarkError("--benchmark needs --data FILE (or use --benchmarks with --data-dir)")
        benchmarks = [(args.benchmark, Path(args.data))]
    else:
        if not args.data_dir:
            raise BenchmarkError("--benchmarks needs --data-dir DIR (missing TSVs are downloaded into it)")
        names = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
        benchmarks = [(name, benchmark_file(name, args.data_dir)) for name in names]
    for _, path in benchmarks:
        load_benchmark(path)  # a bad file fails before any model loads
    check_models(args)
    labels = reasoner_labels(
        args.reasoner, args.reasoner_model, args.reasoner_name, args.reasoner_max_retries + 1
    )
    reasoners = [
        (label, lambda r=r: build_reasoner_from_args(args, r))
        for label, r in zip(labels, args.reasoner, strict=True)
    ]
    judge = None
    if args.judge_url:
        import os

        from ..reasoning.judge import AnswerJudge

        # connect now: a wrong judge URL fails before any model loads
        judge = AnswerJudge(args.judge_url, args.judge_model, api_key=os.environ.get(args.judge_api_key_env))
    judged = [b.strip() for b in args.judge_benchmarks.split(",")] if args.judge_benchmarks else None
    mllm_sampling, joint_sampling = samplings(args)
    evaluate_many(
        build_mllm_from_args(args), reasoners, benchmarks, args.out, mllm_sampling=mllm_sampling,
        joint_sampling=joint_sampling, mode=args.mode, mllm_name=args.mllm, limit=args.limit,
        batch_size=args.batch_size, flat=bool(args.benchmark) and len(reasoners) == 1, judge=judge,
        judge_benchmarks=judged,
    )  # fmt: skip
    print((Path(args.out) / "results_table.md").read_text())  # evaluate_many logged each run's line
    print(f"results in {args.out} (results_table.md/.csv/.png)")


def _table(args) -> None:
    from ..evaluation.results_table import collect_summaries, write_table

    md = write_table(collect_summaries(args.folders), args.out)
    print(md.read_text())
    print(f"also {md.with_suffix('.csv')} and {md.with_suffix('.png')}")


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
    from ..reporting.run_summary import audit_summary, load_log_history, reward_table

    print(reward_table(load_log_history(args.output_dir)))
    audit = Path(args.output_dir) / "audit"
    if audit.is_dir():
        print(audit_summary(audit))
    if args.html:
        from ..reporting.viewer import write_viewer

        page = write_viewer(args.output_dir, args.html_out, args.steps)
        print(f"caption viewer: {page} (open it in a browser; it works offline)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="racro",
        description="RACRO / CRO tools. Train with: accelerate launch recipes/cro.py --config recipes/<...>.yaml",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, HTTP clients' per-request lines included"
    )
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
        help="write a synthetic dataset: mixed shapes, colours and counts (data/sample), the colour task "
        "CRO learns in `make demo` (data/colour), or mini-RACRO's tiles (data/tiles, with its eval TSV)",
    )
    p.add_argument("--task", choices=("mixed", "colour", "tiles"), default="mixed")
    p.add_argument(
        "--out", default=None, help="output folder (default: data/sample, data/colour, data/tiles)"
    )
    p.add_argument(
        "--rows", type=int, default=None, help="training rows (default: 48 mixed, 64 colour, 512 tiles)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_sample_data)

    p = sub.add_parser(
        "repro-mini",
        help="mini-RACRO: the paper's two claims on synthetic tiles, with models built here (2 CPU cores: ~16 min)",
        description="Build the tiles data, a captioner and a weak and a strong reasoner (TRL SFT, from random "
        "weights), run CRO per seed (recipes/mini/cro.yaml), evaluate with racro eval and write the table, "
        "a figure and caption examples to --out. What is already in --out is reused.",
    )
    p.add_argument("--out", default="outputs/mini", help="output folder (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CRO seeds (default: 0 1 2)")
    p.add_argument("--steps", type=int, default=60, help="CRO steps per seed (default: %(default)s)")
    p.add_argument(
        "--eval-rows", type=int, default=192, help="held-out rows of Tiles.tsv, even (default: %(default)s)"
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="one GPU: CRO samples captions with TRL's colocated vLLM and rewards them with an in-process vLLM "
        "reasoner (the models build on the CPU either way, and evaluate on the GPU whenever there is one)",
    )
    p.add_argument(
        "--sabotage",
        choices=("constant-images", "deaf", "blind"),
        default=None,
        help="a control that must not gain: CRO on constant images, rewarded by a reasoner trained apart from "
        "the images (deaf), or by the weak reasoner reading an empty caption (blind)",
    )
    p.set_defaults(func=_repro_mini)

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
    add_model_flags(p)
    p.set_defaults(func=_infer)

    p = sub.add_parser(
        "eval",
        help="score a VLMEvalKit-format benchmark TSV through the three stages (cached, resumable)",
        description="Each stage is cached in --out: an interrupted run resumes, and a new reasoner re-runs "
        "stage 3 only. With several benchmarks and reasoners (--benchmarks, --reasoner repeated) stages 1-2 "
        "run once per benchmark and stage 3 once per reasoner; results_table.md/.csv/.png hold the paper's "
        "layout. Scoring is rule-based (boxed answer, choice letter, math-verify) unless --judge-url is given: "
        "then an LLM judge extracts the answers, and those scores are marked judge:<model>, in rows of their own.",
    )
    p.add_argument(
        "--benchmark", help="one benchmark: a name for the reports, e.g. MathVista_MINI (with --data)"
    )
    p.add_argument("--data", help="with --benchmark: the TSV (VLMEvalKit format, base64 images)")
    p.add_argument(
        "--benchmarks",
        help="several, comma-separated, e.g. " + ",".join(PAPER_BENCHMARKS) + " (the paper's table; with "
        "--data-dir)",
    )
    p.add_argument(
        "--data-dir",
        help="folder of <benchmark>.tsv files; a missing one is downloaded from VLMEvalKit's URL",
    )
    p.add_argument(
        "--out", required=True, help="output folder: one folder per benchmark (caches, results), the table"
    )
    p.add_argument("--mode", choices=["full", "caption-only", "mllm-only"], default="full")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--batch-size", type=int, default=64, help="rows per stage batch (and per cache flush)")
    p.add_argument(
        "--judge-url",
        help="OpenAI-compatible URL of an LLM judge that extracts the final answers, as VLMEvalKit's GPT judge "
        "does (e.g. https://api.openai.com/v1); off by default",
    )
    p.add_argument(
        "--judge-model", help="the judge model, e.g. gpt-4o-mini (default: the first the server lists)"
    )
    p.add_argument(
        "--judge-api-key-env", default="JUDGE_API_KEY", help="environment variable holding the judge's key"
    )
    p.add_argument("--judge-benchmarks", help="comma-separated: judge only these (default: every benchmark)")
    add_model_flags(p, several_reasoners=True)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "table",
        help="merge finished `racro eval` output folders into one table (e.g. base model vs CRO checkpoint)",
        description="Rows: (captioner, reasoner, mode); columns: the benchmarks, then the average. Writes "
        "results_table.md, .csv and a grouped bar chart .png into --out.",
    )
    p.add_argument("folders", nargs="+", help="racro eval --out folders")
    p.add_argument("--out", default=".", help="where the merged table goes (default: %(default)s)")
    p.set_defaults(func=_table)

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

    p = sub.add_parser(
        "report",
        help="print the reward table and audit summary of a training output_dir; --html: the caption viewer",
        description="The reward table and the audit summary of a CRO run. With --html, also one self-contained "
        "page (captions.html in the output_dir) showing each audited prompt's image, question and gold answer "
        "with the captions sampled for it, their rewards and the reasoner's answers, filterable by step and reward.",
    )
    p.add_argument("output_dir")
    p.add_argument("--html", action="store_true", help="write the caption viewer page")
    p.add_argument("--html-out", help="where the page goes (default: OUTPUT_DIR/captions.html)")
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        help="the steps the page shows (default: first, middle and last audited)",
    )
    p.set_defaults(func=_report)
    return parser


# HTTP clients log one INFO line per request under names that change between releases (httpx, then
# httpx2): matched by prefix, so a renamed client stays quiet too. Their warnings still show.
HTTP_CLIENT_LOGGERS = ("httpx", "httpcore", "openai", "urllib3", "h11", "h2", "hpack", "aiohttp")


def quiet_http_clients(record: logging.LogRecord) -> bool:
    """A logging filter: False for HTTP clients' records below WARNING (unless ``--verbose``).

    >>> record = lambda name, level: logging.LogRecord(name, level, "", 0, "HTTP Request: POST", None, None)
    >>> quiet_http_clients(record("httpx2", logging.INFO)), quiet_http_clients(record("httpx._client", logging.WARNING))
    (False, True)
    >>> quiet_http_clients(record("racro_trl.evaluation.evaluate", logging.INFO))
    True
    """
    return record.levelno >= logging.WARNING or not record.name.split(".")[0].startswith(HTTP_CLIENT_LOGGERS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        # Log lines go through tqdm.write, above the progress bars instead of through them.
        with logging_redirect_tqdm():
            if not args.verbose:
                for handler in logging.getLogger().handlers:
                    handler.addFilter(quiet_http_clients)
            args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"racro {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
