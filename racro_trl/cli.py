"""The ``racro`` command: tiny models, sample data, run reports.

Training itself is ``accelerate launch recipes/cro.py --config <yaml>`` (see README).
"""

from __future__ import annotations

import argparse
import logging
import sys


def _make_tiny(args) -> None:
    from .tiny import build_tiny_models

    paths = build_tiny_models(args.out, seed=args.seed, force=args.force)
    for role, path in paths.items():
        print(f"{role}: {path}")


def _make_sample_data(args) -> None:
    from .data import build_sample_dataset

    path = build_sample_dataset(args.out, n=args.rows, seed=args.seed)
    print(f"wrote {args.rows} rows to {path}")


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
        "make-tiny", help="build tiny random policy + reasoner checkpoints locally (tests, demo)"
    )
    p.add_argument(
        "--out", default="tiny-models", help="folder for policy/ and reasoner/ (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if the folder already holds them")
    p.set_defaults(func=_make_tiny)

    p = sub.add_parser(
        "make-sample-data", help="write the synthetic sample dataset (shapes, colours, counts)"
    )
    p.add_argument("--out", default="data/sample", help="output folder (default: %(default)s)")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_sample_data)

    p = sub.add_parser(
        "prepare-data",
        help="ViRL39K release (39Krelease.parquet + images/) -> training dataset",
        description="Turn the ViRL39K release into the dataset recipes/cro.py trains on: drops text-only "
        "sources, resolves and checks images, bounds their area, places <image> tags, builds the caption prompt.",
    )
    p.add_argument("--src", required=True, help="39Krelease.parquet, or the folder holding it and images/ (or images.zip)")
    p.add_argument("--out", required=True, help="output folder (save_to_disk + parquet/ shards)")
    p.add_argument("--drop-sources", nargs="*", default=["DeepScaleR"], help="sources to drop (default: %(default)s)")
    p.add_argument("--keep-sources", nargs="*", default=[], help="keep only these sources (default: all)")
    p.add_argument("--min-pixels", type=int, default=512 * 512, help="smallest image area (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=2048 * 2048, help="largest image area (default: %(default)s)")
    p.add_argument("--num-proc", type=int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="skip and count rows with a missing/unreadable image, empty answer or duplicate qid (default: fail)",
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="also push the dataset to this Hub repo (token: HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private dataset repo")
    p.set_defaults(func=_prepare_data)

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
    except (ValueError, FileNotFoundError) as error:
        print(f"racro {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
