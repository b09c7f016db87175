"""The models an ``infer`` or ``eval`` run uses: their flags, checks, backends and the names the
results give the reasoners (checkpoints, Hub ids or OpenAI-compatible URLs)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def build_mllm_from_args(args):
    from ..evaluation.pipeline import build_mllm

    kwargs = {"max_images": args.max_images, "min_pixels": args.min_pixels, "max_pixels": args.max_pixels}
    if args.mllm_backend == "vllm":
        kwargs |= {
            "gpu_memory_utilization": args.mllm_gpu_memory_utilization,
            "tensor_parallel_size": args.mllm_tensor_parallel_size,
            "max_model_len": args.max_model_len,
            "enforce_eager": args.enforce_eager,
        }
    return build_mllm(args.mllm_backend, args.mllm, **kwargs)


def is_served(reasoner: str) -> bool:
    """A ``--reasoner`` given as an OpenAI-compatible URL (else a checkpoint path or Hub id)."""
    return reasoner.startswith(("http://", "https://"))


def build_reasoner_from_args(args, reasoner: str):
    """A reasoner checkpoint (in-process, ``--reasoner-backend``) or an OpenAI-compatible URL."""
    from ..reasoning.reasoners import build_reasoner

    if is_served(reasoner):
        return build_reasoner("openai", args.reasoner_model, reasoner, max_retries=args.reasoner_max_retries)
    if (args.reasoner_backend or "vllm") == "vllm":
        return build_reasoner(
            "vllm",
            reasoner,
            seed=args.seed,
            gpu_memory_utilization=args.reasoner_gpu_memory_utilization,
            tensor_parallel_size=args.reasoner_tensor_parallel_size,
            max_model_len=args.max_model_len,
            enforce_eager=args.enforce_eager,
        )
    return build_reasoner(args.reasoner_backend, reasoner)


def samplings(args):
    from ..evaluation.pipeline import JOINT_SAMPLING, MLLM_SAMPLING

    return replace(MLLM_SAMPLING, max_tokens=args.max_tokens, seed=args.seed), replace(
        JOINT_SAMPLING, max_tokens=args.max_tokens, seed=args.seed
    )


def check_models(args) -> None:
    """--mllm and every local --reasoner exist (a folder with config.json) or are Hub ids, before any loads."""
    from ..training.launch_checks import check_model_reference

    check_model_reference(args.mllm, "--mllm")
    for reasoner in [args.reasoner] if isinstance(args.reasoner, str) else args.reasoner or []:
        if not is_served(reasoner):
            check_model_reference(reasoner, "--reasoner")


def served_model_ids(url: str, attempts: int = 1, timeout: float = 10.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists at ``url/models`` (``attempts`` tries, 1 s apart);
    a one-line error naming the URL otherwise, before any model loads."""
    import time

    import httpx

    for attempt in range(1, attempts + 1):
        try:
            response = httpx.get(url.rstrip("/") + "/models", timeout=timeout)
            response.raise_for_status()
            return [m["id"] for m in response.json()["data"]]
        except httpx.TransportError as error:
            if attempt == attempts:
                raise ValueError(
                    f"reasoner server at {url} unreachable after {attempts} attempts ({error})"
                ) from error
            time.sleep(1.0)
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise ValueError(f"--reasoner {url}: no OpenAI-compatible model list there ({error})") from error
    return []


def label_reasoners(reasoners: list[str], names: list[str]) -> list[str]:
    """``names`` (the model of each reasoner) made unique: a served one that collides gets its host:port.

    >>> label_reasoners(["http://127.0.0.1:18431/v1", "http://127.0.0.1:18432/v1", "/ckpt/r1"], ["r1", "r1", "r1"])
    ['r1@127.0.0.1:18431', 'r1@127.0.0.1:18432', 'r1']
    >>> label_reasoners(["http://a:1/v1", "/m/strong"], ["weak", "strong"])
    ['weak', 'strong']
    """
    from urllib.parse import urlsplit

    labels = []
    for reasoner, name in zip(reasoners, names, strict=True):
        served = is_served(reasoner)
        labels.append(f"{name}@{urlsplit(reasoner).netloc}" if served and names.count(name) > 1 else name)
    return labels


def reasoner_labels(
    reasoners: list[str], served_model: str | None, overrides: list[str] | None, attempts: int = 1
) -> list[str]:
    """How the tables, CSV, chart and summaries name each ``--reasoner``: ``--reasoner-name`` when given;
    else a served reasoner's model id (``--reasoner-model``, or the first its server lists at /v1/models),
    a local checkpoint's folder name, or a Hub id as written; host:port is added where two would collide."""
    if overrides:
        if len(overrides) != len(reasoners):
            raise ValueError(
                f"{len(overrides)} --reasoner-name for {len(reasoners)} --reasoner; give one per reasoner"
            )
        return list(overrides)
    names = []
    for r in reasoners:
        if is_served(r):
            ids = served_model_ids(r, attempts)
            if served_model and served_model not in ids:
                raise ValueError(f"--reasoner-model {served_model!r} is not served at {r} (it serves {ids})")
            names.append(served_model or (ids[0] if ids else r))
        else:
            names.append(Path(r).name if Path(r).is_dir() else r)
    return label_reasoners(reasoners, names)


def add_model_flags(p: argparse.ArgumentParser, several_reasoners: bool = False) -> None:
    p.add_argument("--mllm", required=True, help="the captioner: checkpoint path or Hub id (Qwen2.5-VL)")
    p.add_argument("--mllm-backend", choices=["vllm", "transformers"], default="vllm")
    p.add_argument(
        "--reasoner",
        required=True,
        action="append" if several_reasoners else "store",
        help="reasoner checkpoint path / Hub id, or an OpenAI-compatible URL"
        + ("; repeat it to compare reasoners on the same captions" if several_reasoners else ""),
    )
    p.add_argument(
        "--reasoner-backend", choices=["vllm", "transformers"], help="for a checkpoint (default: vllm)"
    )
    p.add_argument("--reasoner-model", help="with a URL: the served model name (default: the first served)")
    if several_reasoners:
        p.add_argument(
            "--reasoner-name",
            action="append",
            help="the reasoner's name in tables and charts, once per --reasoner (default: the model id its server "
            "lists, or the checkpoint's folder name)",
        )
    p.add_argument("--reasoner-max-retries", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=8192, help="per stage (default: %(default)s)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed (the reasoner samples at temperature 0.6): the same models and captions give the "
        "same answers again (default: %(default)s)",
    )
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
