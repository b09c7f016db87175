"""The frozen text reasoner: one protocol, three backends.

* ``vllm``: an in-process ``vllm.LLM`` (one training process, or inference);
* ``openai``: any OpenAI-compatible endpoint, e.g. ``vllm serve`` on its own GPU(s), shared by all
  training ranks; requests go out concurrently with a timeout and bounded retries;
* ``transformers``: ``generate`` on a causal LM; small models and debugging only.

Every backend answers a whole batch in one call: ``generate(chats, n, sampling)`` returns, per
chat, ``n`` sampled texts. A reasoner is a service, never a layer of the policy: backends are built
by :func:`build_reasoner` only, which refuses to run inside DeepSpeed's ``zero.Init`` and hides the
ZeRO-3 flag from ``from_pretrained`` so the reasoner's weights are never partitioned.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from ..compat import inside_zero_init, vllm_engine_env, vllm_engine_kwargs, without_zero3_registration

logger = logging.getLogger(__name__)

Chat = list[dict]
BACKENDS = ("vllm", "openai", "transformers")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of the reasoner (CRO default: temperature 1.0, top_p 1.0, 8192 tokens)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 8192
    seed: int | None = None

    def request_seed(self, index: int) -> int | None:
        """The seed of the ``index``-th request of a batch: distinct per request, so equal seeds
        do not make every caption draw the same random answers."""
        return None if self.seed is None else self.seed + index


@dataclass
class Answers:
    """What one :meth:`Reasoner.generate` call gives back.

    ``texts``: ``n`` answers per chat, in order (None for a chat whose request failed for good, with
    ``partial``); ``truncated``: per answer, whether it ran out of ``max_tokens`` (empty for a failed
    chat); ``errors``: why each failed chat failed, by its index; ``tokens``: output tokens of the call;
    ``seconds``: the call's wall time."""

    texts: list[list[str] | None]
    truncated: list[list[bool]]
    errors: dict[int, str] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0


class TokenCount:
    """A reasoner that sums the output tokens of every call (``tokens``): for throughput figures over
    several calls, or over calls another object makes (the reward, the evaluation pipeline)."""

    def __init__(self, inner: Reasoner):
        self.inner, self.name, self.tokens = inner, inner.name, 0

    def generate(self, chats: list[Chat], n: int, sampling: Sampling, *, partial: bool = False) -> Answers:
        answers = self.inner.generate(chats, n, sampling, partial=partial)
        self.tokens += answers.tokens
        return answers

    def close(self) -> None:
        self.inner.close()


class ReasonerError(RuntimeError):
    """The reasoner could not answer (server unreachable, bad reply, ...)."""


class Reasoner(Protocol):
    """A text reasoner that answers a batch of chats in one call."""

    name: str

    def generate(self, chats: list[Chat], n: int, sampling: Sampling, *, partial: bool = False) -> Answers:
        """``n`` sampled answers for every chat, in order. ``partial``: a chat whose request failed for good
        answers None, with its error in ``errors`` (backends that answer a whole batch or raise never do);
        without it, any failure raises :class:`ReasonerError`."""
        ...

    def close(self) -> None:
        """Free the engine / connections."""
        ...


# --- Keeping the reasoner out of ZeRO-3 -----------------------------------------------------------


@contextlib.contextmanager
def outside_zero3():
    """Build a model that ZeRO-3 must not partition.

    Raises inside ``zero.Init``: every module created there is partitioned across ranks (a
    partitioned reasoner fails with ``'weight' must be 2-D``). Outside it, transformers still wraps
    ``from_pretrained`` in ``zero.Init`` whenever a ZeRO-3 config is registered (accelerate does that
    for the policy), so the registration is hidden while the block runs.
    """
    if inside_zero_init():
        raise RuntimeError(
            "a reasoner is being built inside DeepSpeed zero.Init, which would partition it across ranks; "
            "build it outside (CaptionReward builds it lazily at its first call, which is always outside)"
        )
    with without_zero3_registration():
        yield


# --- Backends -------------------------------------------------------------------------------------


class VLLMReasoner:
    """In-process ``vllm.LLM``; the chat template of the reasoner's own tokenizer builds the prompts."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        seed: int | None = 0,
        sleep: bool = False,
        **engine_kwargs,
    ):
        from vllm import LLM

        # sleep: between calls the engine sleeps (vLLM sleep mode, level 1: weights copied to CPU memory,
        # KV cache freed), so the policy's forward and backward passes get the reasoner's GPU memory.
        self.sleep = sleep
        if sleep:
            engine_kwargs["enable_sleep_mode"] = True
        start = time.perf_counter()
        engine_kwargs = vllm_engine_kwargs(engine_kwargs, seed, tensor_parallel_size)
        with vllm_engine_env():
            self.llm = LLM(
                model=model,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                dtype=dtype,
                enforce_eager=enforce_eager,
                **engine_kwargs,
            )
        self.tokenizer = self.llm.get_tokenizer()
        self.model = model
        from vllm.platforms import current_platform

        # vLLM's CPU sampler cannot resume a seeded generator across chunked-prefill steps ("CPU
        # Generator does not use offset"), so on CPU only the engine seed makes runs reproducible.
        self.request_seeds = not current_platform.is_cpu()
        if sleep:
            self.llm.sleep(level=1)
        logger.info(
            "vLLM reasoner %s ready in %.1fs%s", model, time.perf_counter() - start,
            f" on GPU {engine_kwargs['device_ids'][0]}" if "device_ids" in engine_kwargs else "",
        )  # fmt: skip

    def prompts(self, chats: list[Chat]) -> list[str]:
        """The chats rendered with the reasoner's chat template."""
        return [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats
        ]

    def sampling_params(self, count: int, n: int, sampling: Sampling) -> list:
        """vLLM's ``SamplingParams`` of a batch of ``count`` chats, ``n`` answers each."""
        from vllm import SamplingParams

        return [
            SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.request_seed(i) if self.request_seeds else None,
            )
            for i in range(count)
        ]

    def generate(self, chats: list[Chat], n: int, sampling: Sampling, *, partial: bool = False) -> Answers:
        start = time.perf_counter()
        params = self.sampling_params(len(chats), n, sampling)
        if self.sleep:
            self.llm.wake_up()
        try:
            outputs = self.llm.generate(self.prompts(chats), params, use_tqdm=False)
        finally:
            if self.sleep:
                self.llm.sleep(level=1)
        return Answers(
            texts=[[c.text for c in out.outputs] for out in outputs],
            truncated=[[c.finish_reason == "length" for c in out.outputs] for out in outputs],
            tokens=sum(len(c.token_ids) for out in outputs for c in out.outputs),
            seconds=time.perf_counter() - start,
        )

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(
            getattr(engine, "engine_core", None), "shutdown", None
        )
        if shutdown is not None:
            shutdown()
        self.llm = None


def request_timeout(max_tokens: int) -> float:
    """Seconds one non-streamed request may take: 60 s plus 4 tokens a second for the longest answer
    allowed (8192 tokens: about 35 min). An H100 serving the R1-Distill-7B shape with 1024 requests
    in flight gave each about 10 tokens a second (BENCHMARKS.md: an 8192-token answer in ~14 min),
    so a busy server is not cut off while a dead one is still noticed.

    >>> request_timeout(8192), request_timeout(8)
    (2108.0, 62.0)
    """
    return 60.0 + max_tokens / 4


class OpenAIReasoner:
    """Any OpenAI-compatible chat endpoint (``vllm serve``, SGLang, a hosted API), through the
    ``openai`` client.

    The batch goes out as concurrent requests (``concurrency`` at a time), each asking for ``n``
    choices. The client retries connection errors, timeouts, 408/409/429 and 5xx answers
    ``max_retries`` times with exponential backoff (and the server's Retry-After); other 4xx
    answers, e.g. a prompt over the context length, are final at once. ``timeout``: seconds per
    request, None: :func:`request_timeout` of the call's ``max_tokens``.

    ``generate(..., partial=True)`` gives None for a chat whose request failed for good (the reason
    in ``errors``) and answers the others; without it the first failure raises ReasonerError.
    """

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int = 3,
        concurrency: int = 64,
    ):
        import httpx
        import openai

        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.timeout = timeout
        self.concurrency = concurrency
        self.client = openai.OpenAI(
            base_url=self.url,
            api_key=api_key or "EMPTY",
            max_retries=max_retries,
            timeout=timeout or request_timeout(8192),
            http_client=openai.DefaultHttpxClient(
                limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            ),
        )
        self.model = self._served_model(model)
        logger.info("OpenAI-compatible reasoner %s at %s", self.model, self.url)

    def _served_model(self, model: str | None) -> str:
        """The model to ask: ``model``, checked against what the server lists, or the first listed.
        Asking now makes a wrong URL or model name fail before a training run loads its policy."""
        import openai

        try:
            models = [m.id for m in self.client.models.list(timeout=self.timeout or 30)]
        except openai.APIConnectionError as error:  # refused, reset, timed out: after the retries
            raise ReasonerError(
                f"reasoner server at {self.url} unreachable after {self.client.max_retries + 1} attempts "
                f"({type(error).__name__}: {error}); is it running? (e.g. `vllm serve <model> --port ...`)"
            ) from error
        except openai.APIStatusError as error:
            if model:  # a server that does not list its models: take the name as given
                logger.warning(
                    "reasoner at %s/models answered %s; asking for %r", self.url, error.status_code, model
                )
                return model
            raise ReasonerError(
                f"reasoner at {self.url}/models answered {error.status_code}: {error}"
            ) from error
        if not models:
            raise ReasonerError(f"reasoner server at {self.url} serves no model")
        if model and model not in models:
            raise ReasonerError(
                f"reasoner server at {self.url} serves {models}, not {model!r} (reasoner_model is the served "
                "name: `vllm serve ... --served-model-name NAME`)"
            )
        return model or models[0]

    def _complete(
        self, chat: Chat, n: int, sampling: Sampling, seed: int | None
    ) -> tuple[list[str], list[bool], int]:
        extra = {} if seed is None else {"seed": seed}
        response = self.client.chat.completions.create(
            model=self.model,
            messages=chat,
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            timeout=self.timeout or request_timeout(sampling.max_tokens),
            **extra,
        )
        choices = sorted(response.choices, key=lambda c: c.index)
        tokens = response.usage.completion_tokens if response.usage else 0
        return (
            [c.message.content or "" for c in choices],
            [c.finish_reason == "length" for c in choices],
            tokens,
        )

    def generate(self, chats: list[Chat], n: int, sampling: Sampling, *, partial: bool = False) -> Answers:
        import openai

        start = time.perf_counter()

        def one(i: int):
            try:
                return self._complete(chats[i], n, sampling, sampling.request_seed(i))
            except (openai.APIStatusError, openai.APIConnectionError) as error:
                status = getattr(error, "status_code", None)
                return f"{type(error).__name__}" + (f" {status}" if status else "") + f": {str(error)[:300]}"

        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(chats)))) as pool:
            results = list(pool.map(one, range(len(chats))))
        errors = {i: r for i, r in enumerate(results) if isinstance(r, str)}
        if errors and not partial:
            i, error = next(iter(errors.items()))
            raise ReasonerError(
                f"reasoner at {self.url}: {len(errors)} of {len(chats)} requests failed after "
                f"{self.client.max_retries} retries; request {i}: {error}"
            )
        return Answers(
            texts=[None if isinstance(r, str) else r[0] for r in results],
            truncated=[[] if isinstance(r, str) else r[1] for r in results],
            errors=errors,
            tokens=sum(r[2] for r in results if not isinstance(r, str)),
            seconds=time.perf_counter() - start,
        )

    def close(self) -> None:
        self.client.close()


class TransformersReasoner:
    """``model.generate`` in the training process: for tiny models, tests and debugging."""

    name = "transformers"

    def __init__(
        self, model, *, dtype: str = "auto", device: str | None = None, batch_size: int = 16, tokenizer=None
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # ``model``: a path / Hub id, or an already built model (then pass its ``tokenizer``).
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model, padding_side="left")
        self.tokenizer.padding_side = "left"
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        self.model = model.eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_size = batch_size
        partitioned = any(hasattr(p, "ds_id") for p in self.model.parameters())
        logger.info(
            "transformers reasoner: %d parameters, ZeRO-3 partitioned: %s",
            sum(p.numel() for p in self.model.parameters()),
            partitioned,
        )

    def generate(self, chats: list[Chat], n: int, sampling: Sampling, *, partial: bool = False) -> Answers:
        import torch

        start = time.perf_counter()
        # A seeded call must not reseed the caller's (the trainer's) random stream: fork it.
        with torch.random.fork_rng(
            devices=[] if self.device == "cpu" else None, enabled=sampling.seed is not None
        ):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            answers = self._generate(chats, n, sampling)
        answers.seconds = time.perf_counter() - start
        return answers

    def _generate(self, chats: list[Chat], n: int, sampling: Sampling) -> Answers:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats
        ]
        answers: list[list[str]] = []
        truncated: list[list[bool]] = []
        tokens = 0
        stops = getattr(self.model.generation_config, "eos_token_id", None)
        stops = stops if isinstance(stops, list) else [stops]
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, *stops} - {None}
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i : i + self.batch_size], return_tensors="pt", padding=True).to(
                self.device
            )
            with torch.no_grad():
                out = self.model.generate(
                    **batch,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature if sampling.temperature > 0 else None,
                    top_p=sampling.top_p,
                    max_new_tokens=sampling.max_tokens,
                    num_return_sequences=n,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            tokens += new.numel()  # token positions, padding after an early stop included
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            answers += [decoded[j : j + n] for j in range(0, len(decoded), n)]
            # an answer that holds no end token ran to max_new_tokens
            cut = [not any(int(t) in ends for t in row) for row in new]
            truncated += [cut[j : j + n] for j in range(0, len(cut), n)]
        return Answers(texts=answers, truncated=truncated, tokens=tokens)

    def close(self) -> None:
        self.model = None


def build_reasoner(backend: str, model: str | None = None, url: str | None = None, **kwargs) -> Reasoner:
    """Create a reasoner backend, outside any ZeRO-3 partitioning.

    Args:
        backend: one of ``vllm``, ``openai``, ``transformers``.
        model: checkpoint path or Hub id (``vllm``/``transformers``), or the served model name
            (``openai``; default: the first model the server lists).
        url: base URL of the OpenAI-compatible server (``openai`` only).
        **kwargs: backend options (engine settings, timeout, retries, ...).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown reasoner backend {backend!r}; valid: {', '.join(BACKENDS)}")
    with outside_zero3():
        if backend == "openai":
            if not url:
                raise ValueError(
                    "the openai reasoner backend needs a URL (reasoner_url), e.g. http://127.0.0.1:8000/v1"
                )
            return OpenAIReasoner(url, model, **kwargs)
        if not model:
            raise ValueError(f"the {backend} reasoner backend needs a model path or id (reasoner_model)")
        cls = VLLMReasoner if backend == "vllm" else TransformersReasoner
        return cls(model, **kwargs)
