"""Every prompt string of RACRO, verbatim from the original code, in one place.

Sources: the ViRL39K preprocessing (caption prompt), the CRO reward (reasoner prompt) and the
VLMEvalKit functions ``qa_cot``, ``query_cond_3`` and ``joint`` (inference). The quick-start README
spells the caption system prompt "in details"; the training data and the evaluation use "in
detail", which is what we keep.
"""

from __future__ import annotations

IMAGE_TAG = "<image>"

# --- Stage 2 / training: the query-conditioned caption ------------------------------------------
CAPTION_SYSTEM_PROMPT = (
    "You are given an image and a relevant question. Based on the query, please describe the image "
    "in detail. Do not try to answer the question."
)
CAPTION_USER_PROMPT = "Question: {question}\nPlease describe the image. DO NOT try to answer the question!"

# --- The frozen reasoner during CRO training ----------------------------------------------------
REASONER_SYSTEM_PROMPT = "You are a helpful assistant."
REASONER_REWARD_PROMPT = (
    "### The detailed caption of the provided image: {caption}\n\n"
    "### Question: {question} Please think step by step. The final answer MUST BE put in \\boxed{{}}."
)
# Removed from the question before it reaches the reasoner (it asks for short answers, which
# conflicts with "think step by step").
SHORT_ANSWER_HINT = "Please try to answer the question with short words or phrases if possible."

# --- Stage 1: the tentative answer of the MLLM (qa_cot) -----------------------------------------
QA_SYSTEM_PROMPT = "You are a helpful assistant."
QA_COT_SUFFIX = " Please think step by step. The final answer MUST BE put in \\boxed{}."

# --- Stage 3: joint reasoning over caption + tentative answer -----------------------------------
JOINT_PROMPT = """In the following text, you will receive a detailed caption of an image and a relevant question. In addition, you will be provided with a tentative model response. You goal is to answer the question using these information.

### The detailed caption of the provided image: {caption}

### Note that the caption might contain incorrect solutions, do not be misguided by them.

### A problem to be solved: {question}

### A tentative model response: {tentative}

### Note that the above tentative response might be inaccurate (due to calculation errors, incorrect logic/reasoning and so on), under such a case, please ignore it and give your own solutions. However, if you do not have enough evidence to show it is wrong, please output the tentative response."""
JOINT_SUFFIX = "\n\n### Please think step by step. The final answer MUST BE put in \\boxed{}."


def place_image_tags(question: str, num_images: int) -> str:
    """The question with exactly ``num_images`` ``<image>`` tags.

    The original preprocessing prefixes ``<image>`` to a question whose tags do not match its images;
    we put all the images up front then (the same thing for the usual one-image case).

    >>> place_image_tags("How many dots?", 1)
    '<image>How many dots?'
    """
    if question.count(IMAGE_TAG) == num_images:
        return question
    return IMAGE_TAG * num_images + question.replace(IMAGE_TAG, "")


def _split_on_images(text: str) -> list[dict]:
    """Content parts for ``text`` with an image block wherever ``<image>`` stood."""
    parts: list[dict] = []
    pieces = text.split(IMAGE_TAG)
    for i, piece in enumerate(pieces):
        if piece:
            parts.append({"type": "text", "text": piece})
        if i < len(pieces) - 1:
            parts.append({"type": "image"})
    return parts


def caption_messages(question: str, num_images: int = 1) -> list[dict]:
    """The CRO training / stage-2 prompt as a conversation with image blocks in place.

    >>> [p["type"] for p in caption_messages("<image>How many dots?")[1]["content"]]
    ['text', 'image', 'text']
    """
    user_text = CAPTION_USER_PROMPT.format(question=place_image_tags(question, num_images))
    return [
        {"role": "system", "content": [{"type": "text", "text": CAPTION_SYSTEM_PROMPT}]},
        {"role": "user", "content": _split_on_images(user_text)},
    ]


def qa_cot_messages(question: str, num_images: int = 1) -> list[dict]:
    """The stage-1 (tentative answer) prompt; also the CRO-GRPO training prompt."""
    return [
        {"role": "system", "content": [{"type": "text", "text": QA_SYSTEM_PROMPT}]},
        {"role": "user", "content": _split_on_images(place_image_tags(question, num_images) + QA_COT_SUFFIX)},
    ]


def strip_image_tags(question: str) -> str:
    """The question as a text-only reasoner should see it."""
    return question.replace(IMAGE_TAG, "").strip()


def reasoner_reward_messages(caption: str, question: str) -> list[dict]:
    """The chat the frozen reasoner answers during CRO training (caption + question only).

    >>> reasoner_reward_messages("A red square.", "<image>What colour? " + SHORT_ANSWER_HINT)[1]["content"]
    '### The detailed caption of the provided image: A red square.\\n\\n### Question: What colour? Please think step by step. The final answer MUST BE put in \\\\boxed{}.'
    """
    q = strip_image_tags(question).replace(SHORT_ANSWER_HINT, "").strip()
    return [
        {"role": "system", "content": REASONER_SYSTEM_PROMPT},
        {"role": "user", "content": REASONER_REWARD_PROMPT.format(caption=caption, question=q)},
    ]


def reasoner_blind_messages(question: str) -> list[dict]:
    """The question alone, as the reward chat asks it but with no caption: what the reasoner solves
    blind (caption_gain's baseline).

    >>> reasoner_blind_messages("<image>What colour? " + SHORT_ANSWER_HINT)[1]["content"]
    '### Question: What colour? Please think step by step. The final answer MUST BE put in \\\\boxed{}.'
    """
    q = strip_image_tags(question).replace(SHORT_ANSWER_HINT, "").strip()
    prompt = REASONER_REWARD_PROMPT.split("### Question:", 1)[1]
    return [
        {"role": "system", "content": REASONER_SYSTEM_PROMPT},
        {"role": "user", "content": "### Question:" + prompt.format(question=q)},
    ]


def joint_messages(caption: str, question: str, tentative: str) -> list[dict]:
    """The stage-3 chat: caption, problem and tentative response for the reasoner."""
    text = JOINT_PROMPT.format(caption=caption, question=strip_image_tags(question), tentative=tentative)
    return [
        {"role": "system", "content": REASONER_SYSTEM_PROMPT},
        {"role": "user", "content": text + JOINT_SUFFIX},
    ]
