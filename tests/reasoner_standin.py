"""A local OpenAI-compatible reasoner that fails, stalls or rejects chosen requests, for the outage
tests. It answers ``\\boxed{<last word of the caption>}``, or, asked the question alone (no caption),
``\\boxed{<x>}`` for a question with "(hint: x)" and ``\\boxed{unknown}`` for one without; it
records every attempt it receives. Asked as an answer judge (racro_trl.reasoning.judge's prompt), it extracts
the response's last ``\\boxed{}`` or else its last word, and records the prompts it was given.

Which requests misbehave is decided by the caption (the text after "caption of the provided image:"):
a marker chooses one, ``[reject]`` (400, a prompt over the context length: final), ``[down]``
(500 on every attempt), ``[flaky]`` (503 on the first attempt), ``[stall]`` (the first attempt
answers after ``stall`` seconds, past the client's timeout); with ``down_share`` a caption whose
hash falls in that share is ``[down]`` too (for captions a policy writes).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter

from standin import JSONHandler, StandIn

MODEL = "standin-reader"


def caption_of(content: str) -> str:
    m = re.search(r"caption of the provided image: (.*?)\n\n### Question", content, re.S)
    return m.group(1) if m else content


def answer_word(content: str) -> str:
    if "caption of the provided image:" not in content:  # blind: the question alone
        hint = re.search(r"\(hint: (\w+)\)", content)
        return hint.group(1) if hint else "unknown"
    words = re.sub(r"\[\w+\]", "", caption_of(content)).strip().rstrip(".").split()
    return words[-1] if words else ""


def judge_reply(content: str) -> str:
    response = content.rsplit("Model response:", 1)[1].rsplit("Extracted answer:", 1)[0].strip()
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", response)
    words = re.findall(r"[\w.]+", response)
    return boxed[-1] if boxed else (words[-1].rstrip(".") if words else "NONE")


def fate(caption: str, down_share: float = 0.0) -> str:
    for marker in ("reject", "down", "flaky", "stall"):
        if f"[{marker}]" in caption:
            return marker
    digest = int(hashlib.sha1(caption.encode()).hexdigest(), 16)
    return "down" if digest % 1000 < down_share * 1000 else "ok"


class ReasonerStandIn(StandIn):
    path = "/v1"

    def __init__(self, stall: float = 5.0, down_share: float = 0.0):
        self.stall, self.down_share = stall, down_share
        self.attempts: Counter = Counter()  # caption -> attempts received
        self.statuses: list[tuple[str, int]] = []  # (fate, status) of every attempt
        self.judged: list[str] = []  # the judge prompts received
        self._lock = threading.Lock()
        super().__init__()

    def _handler(self):
        standin = self

        class Handler(JSONHandler):
            def do_GET(self):
                self._reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                content = body["messages"][-1]["content"]
                if content.startswith("Extract the final answer"):
                    standin.judged.append(content)
                    return self._reply(200, {"id": "j", "object": "chat.completion", "created": 0, "model": MODEL,
                                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                                 "role": "assistant", "content": judge_reply(content)}}]})  # fmt: skip
                caption = caption_of(content)
                kind = fate(caption, standin.down_share)
                with standin._lock:
                    standin.attempts[caption] += 1
                    attempt = standin.attempts[caption]
                status = 200
                if kind == "reject":
                    status = 400
                elif kind == "down" or (kind == "flaky" and attempt == 1):
                    status = 500 if kind == "down" else 503
                elif kind == "stall" and attempt == 1:
                    time.sleep(standin.stall)
                with standin._lock:
                    standin.statuses.append((kind, status))
                if status == 400:
                    message = "This model's maximum context length is 1024 tokens. However, you requested 4096 tokens."
                    return self._reply(
                        400, {"error": {"message": message, "type": "BadRequestError", "code": 400}}
                    )
                if status != 200:
                    return self._reply(status, {"error": {"message": "server error", "code": status}})
                text = f"So the answer is \\boxed{{{answer_word(content)}}}"
                n = body.get("n", 1)
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    for i in range(n)
                ]
                usage = {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}
                self._reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                                  "choices": choices, "usage": usage})  # fmt: skip

        return Handler
