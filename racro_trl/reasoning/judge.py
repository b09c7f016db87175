"""Optional answer extraction by an LLM judge, for ``racro eval`` (off by default).

VLMEvalKit has a GPT model read each response and write out its final answer before comparing it
with the gold one. ``AnswerJudge`` does the same through any OpenAI-compatible URL (a hosted API,
or ``vllm serve`` of an open model): it sees the question, its options and the part of the response
after the reasoning block, and answers with the final answer alone, or ``NONE``. The extracted
answer is then graded by the same rules as everywhere else
(:func:`racro_trl.reasoning.grading.is_equivalent`). Judged scores are marked as such in every summary and
table (``scoring: judge:<model>``), in rows of their own, so that rule-based and judged numbers
are never mixed.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

JUDGE_PROMPT = """Extract the final answer from a model's response to a question.
Reply with the answer only: a number, an expression, a word or phrase, or for a multiple-choice question the option letter. If the response states no final answer, reply NONE.

Example 1
Question: Which number is missing? 2, 6, 10, ?, 18
Model response: Each term adds 4, so the missing number is 14.
Extracted answer: 14

Example 2
Question: Which shape is largest?
Options:
A. circle
B. square
Model response: Comparing the areas, the square covers more of the image.
Extracted answer: B

Example 3
Question: What is the area of the triangle?
Model response: I cannot determine the sides from the description.
Extracted answer: NONE

Question: {question}
Model response: {response}
Extracted answer:"""


class AnswerJudge:
    """An OpenAI-compatible model that extracts final answers (greedy, short replies).

    Args:
        url: base URL, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: the judge model (None: the first the server lists).
        api_key: the key (never put it in a file: ``racro eval`` reads ``--judge-api-key-env``).
        concurrency, timeout, max_retries: requests in flight, seconds each, retries (the ``openai``
            client retries connection errors, timeouts, 429 and 5xx).
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 3,
    ):
        import openai

        self.url = url.rstrip("/")
        self.client = openai.OpenAI(
            base_url=self.url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries
        )
        self.concurrency = concurrency
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.APIConnectionError as error:
            raise ValueError(
                f"the judge at {self.url} is unreachable ({error}); is the URL right?"
            ) from error
        except openai.APIError:
            served = []  # a server that lists no models: --judge-model is taken on trust
        if model and served and model not in served:
            raise ValueError(f"--judge-model {model}: the judge at {self.url} serves {', '.join(served)}")
        if not (model or served):
            raise ValueError(
                f"the judge at {self.url} lists no model; is the URL right? "
                "(pass --judge-model for a server that does not list its models)"
            )
        self.model = model or served[0]

    def extract(self, question: str, response: str) -> str | None:
        """The judge's extracted answer, None for ``NONE`` or an empty reply."""
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": JUDGE_PROMPT.format(question=question, response=response)}],
            temperature=0.0,
            max_tokens=64,
        )
        text = (reply.choices[0].message.content or "").strip().splitlines()
        answer = text[0].strip() if text else ""
        answer = answer.removeprefix("Extracted answer:").strip()
        return None if not answer or answer.upper() == "NONE" else answer

    def extract_many(self, pairs: list[tuple[str, str]]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(pairs)))) as pool:
            return list(pool.map(lambda p: self.extract(*p), pairs))
