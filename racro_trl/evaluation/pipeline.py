"""RACRO inference in three stages, every stage batched.

1. tentative answer: the MLLM answers the question itself (``qa_cot`` prompt, temperature 0);
2. query-conditioned caption: the MLLM describes the image for the question (temperature 0);
3. joint reasoning: the text reasoner reads caption + question + tentative answer and answers
   (temperature 0.6, top_p 0.95).

The MLLM runs in vLLM (``vllm``) or transformers (``transformers``, small models and debugging);
the reasoner is any :mod:`racro_trl.reasoning.reasoners` backend, e.g. a ``vllm serve`` on other GPUs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..compat import vllm_engine_env
from ..reasoning import prompts as P
from ..reasoning.grading import extract_answer
from ..reasoning.reasoners import Reasoner, Sampling

logger = logging.getLogger(__name__)

MLLM_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=8192)
JOINT_SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_tokens=8192)


@dataclass
class Item:
    """One question: its images (PIL) and text."""

    images: list
    question: str


class VLLMMLLM:
    """A Qwen2.5-VL checkpoint in an in-process ``vllm.LLM``."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        max_images: int = 1,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.4,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        **engine_kwargs,
    ):
        from transformers import AutoProcessor
        from vllm import LLM

        self.processor = AutoProcessor.from_pretrained(model)
        mm_kwargs = {k: v for k, v in {"min_pixels": min_pixels, "max_pixels": max_pixels}.items() if v}
        with vllm_engine_env():
            self.llm = LLM(
                model=model,
                limit_mm_per_prompt={"image": max_images},
                mm_processor_kwargs=mm_kwargs or None,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                enforce_eager=enforce_eager,
                seed=seed,
                **engine_kwargs,
            )
        self.extra_sampling: dict = {}  # more SamplingParams for every request (benchmarks)

    def generate(self, conversations: list[list[dict]], images: list[list], sampling: Sampling) -> list[str]:
        from vllm import SamplingParams

        requests = [
            {
                "prompt": self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                "multi_modal_data": {"image": imgs if len(imgs) > 1 else imgs[0]},
            }
            for c, imgs in zip(conversations, images, strict=True)
        ]
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            **self.extra_sampling,
        )
        return [out.outputs[0].text for out in self.llm.generate(requests, params, use_tqdm=False)]


class TransformersMLLM:
    """A Qwen2.5-VL checkpoint with ``model.generate`` (small models, debugging)."""

    name = "transformers"

    def __init__(self, model: str, *, batch_size: int = 8, dtype: str = "auto", **_ignored):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model, padding_side="left")
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.batch_size = batch_size

    def generate(self, conversations: list[list[dict]], images: list[list], sampling: Sampling) -> list[str]:
        import torch

        texts = [
            self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        outputs: list[str] = []
        for i in range(0, len(texts), self.batch_size):
            batch_images = [img for imgs in images[i : i + self.batch_size] for img in imgs]
            inputs = self.processor(
                text=texts[i : i + self.batch_size], images=batch_images, return_tensors="pt", padding=True
            ).to(self.device)
            greedy = sampling.temperature == 0
            with torch.no_grad():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=sampling.max_tokens,
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                )
            outputs += self.processor.batch_decode(
                out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return outputs


MLLM_BACKENDS = {"vllm": VLLMMLLM, "transformers": TransformersMLLM}


def build_mllm(backend: str, model: str, **kwargs):
    """Create the MLLM backend (``vllm`` or ``transformers``) for ``model``."""
    if backend not in MLLM_BACKENDS:
        raise ValueError(f"unknown MLLM backend {backend!r}; valid: {', '.join(MLLM_BACKENDS)}")
    return MLLM_BACKENDS[backend](model, **kwargs)


class RacroPipeline:
    """The three stages over batches of :class:`Item`.

    Args:
        mllm: a :func:`build_mllm` backend (the trained captioner).
        reasoner: a :class:`~racro_trl.reasoning.reasoners.Reasoner` (any text LLM).
        mllm_sampling / joint_sampling: the stages' sampling (defaults: the original settings).
    """

    def __init__(
        self,
        mllm,
        reasoner: Reasoner,
        mllm_sampling: Sampling = MLLM_SAMPLING,
        joint_sampling: Sampling = JOINT_SAMPLING,
    ):
        self.mllm, self.reasoner = mllm, reasoner
        self.mllm_sampling, self.joint_sampling = mllm_sampling, joint_sampling

    def tentative(self, items: list[Item]) -> list[str]:
        """Stage 1: the MLLM's own step-by-step answers."""
        chats = [P.qa_cot_messages(item.question, len(item.images)) for item in items]
        return self._timed(
            "tentative", lambda: self.mllm.generate(chats, [i.images for i in items], self.mllm_sampling)
        )

    def caption(self, items: list[Item]) -> list[str]:
        """Stage 2: query-conditioned captions."""
        chats = [P.caption_messages(item.question, len(item.images)) for item in items]
        return self._timed(
            "caption", lambda: self.mllm.generate(chats, [i.images for i in items], self.mllm_sampling)
        )

    def reason(self, questions: list[str], captions: list[str], tentatives: list[str] | None) -> list[str]:
        """Stage 3: the reasoner's answers; without tentative answers, the caption-only (CRO reward) prompt."""
        if tentatives is None:
            chats = [P.reasoner_reward_messages(c, q) for c, q in zip(captions, questions, strict=True)]
        else:
            chats = [
                P.joint_messages(c, q, t) for c, q, t in zip(captions, questions, tentatives, strict=True)
            ]
        return self._timed(
            "reason", lambda: [a[0] for a in self.reasoner.generate(chats, 1, self.joint_sampling).texts]
        )

    def answer(self, items: list[Item]) -> list[dict]:
        """All three stages; per item: tentative, caption, final output and its extracted answer."""
        tentatives = self.tentative(items)
        captions = self.caption(items)
        finals = self.reason([i.question for i in items], captions, tentatives)
        return [
            {"tentative": t, "caption": c, "final": f, "answer": extract_answer(f)}
            for t, c, f in zip(tentatives, captions, finals, strict=True)
        ]

    @staticmethod
    def _timed(stage: str, run):
        start = time.perf_counter()
        out = run()
        logger.info("stage %s: %d outputs in %.1fs", stage, len(out), time.perf_counter() - start)
        return out
