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

    p = sub.add_parser("make-tiny", help="build tiny random policy + reasoner checkpoints locally (tests, demo)")
    p.add_argument("--out", default="tiny-models", help="folder for policy/ and reasoner/ (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if the folder already holds them")
    p.set_defaults(func=_make_tiny)

    p = sub.add_parser("make-sample-data", help="write the synthetic sample dataset (shapes, colours, counts)")
    p.add_argument("--out", default="data/sample", help="output folder (default: %(default)s)")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_sample_data)

    p = sub.add_parser("report", help="print the reward table and audit summary of a training output_dir")
    p.add_argument("output_dir")
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"racro {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
