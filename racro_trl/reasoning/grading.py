"""Answer extraction and equivalence: the part of the reward that decides 1.0 or 0.0.

Two graders, chosen by name (``GRADERS``; the recipe key ``grader``):

* ``default`` (ours): drop the R1 ``<think>`` block (an output cut off inside it scores 0, even
  with a ``\\boxed{}`` in the thinking), take the last box (nested braces allowed), then decide
  equivalence by (1) multiple-choice letters against letters or option text, both ways,
  (2) normalised strings (units, currency, degrees, percent, ``\\dfrac``...), (3) math-verify on
  the raw answers, sets against relations allowed (``x < 2`` = ``(-\\infty, 2)``, ``x=2 or x=3`` =
  ``2, 3``), (4) math-verify on the normalised strings.
* ``strict``: the original CRO reward exactly, for reproduction runs: mathruler's
  ``extract_boxed_content`` on the whole output, then its ``grade_answer``.

On the labelled set of R1-style outputs ``tests/data/grading_labelled.jsonl`` (``bench/grading.py``
prints both accuracies) ``default`` agrees with the labels more often; BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import functools
import re
import threading

_CHOICE_LETTERS = "ABCDEFGH"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def strip_thinking(text: str, truncated: bool = False) -> str:
    """Drop an R1-style reasoning block: everything up to the last ``</think>``. An output cut off
    inside its thinking (a ``<think>`` never closed, or a ``truncated`` output, i.e. one stopped at
    the token limit, with no ``</think>``) has no answer: "".

    >>> strip_thinking("<think>maybe \\\\boxed{1}</think> So \\\\boxed{2}.")
    ' So \\\\boxed{2}.'
    >>> strip_thinking("<think>so \\\\boxed{1}, unless the"), strip_thinking("so \\\\boxed{1}, unless", truncated=True)
    ('', '')
    """
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    if truncated or "<think>" in text:
        return ""
    return text


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included.

    Returns None when there is no complete box (e.g. the output was truncated inside it).

    >>> extract_boxed("so \\\\boxed{\\\\frac{1}{2}} and not \\\\boxed{3")
    '\\\\frac{1}{2}'
    >>> extract_boxed("The answer is \\\\boxed 7.")
    '7'
    >>> extract_boxed("no box") is None
    True
    """
    best: str | None = None
    for command in _BOX_COMMANDS:
        start = text.rfind(command)
        while start != -1:
            content = _box_content(text, start + len(command))
            if content is not None:
                if best is None or start > best[0]:
                    best = (start, content)
                break
            start = text.rfind(command, 0, start)
    return None if best is None else best[1].strip()


def _box_content(text: str, i: int) -> str | None:
    """The argument of a box command whose name ends at ``i``."""
    if i < len(text) and text[i] == " ":
        # "\boxed 7" form: the argument runs to the next space or "$".
        m = re.match(r" +([^\s$]+)", text[i:])
        return m.group(1).rstrip(".") if m else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(output: str, truncated: bool = False) -> str | None:
    """The final answer of a model output: last box after the reasoning block, or None."""
    return extract_boxed(strip_thinking(output, truncated))


def choice_letter(text: str, valid: str = _CHOICE_LETTERS) -> str | None:
    """The choice letter an answer names: "(B)", "B.", "B: text", "option B", "\\text{B}".

    >>> [choice_letter(s) for s in ["(B)", "B.", "C: 12 cm", "Option d", "\\\\text{(A)}", "Yes"]]
    ['B', 'B', 'C', 'D', 'A', None]
    """
    s = _unwrap_text(text).strip().strip("$ ").strip()
    m = re.fullmatch(
        rf"(?:option|choice|answer)?\s*[\(\[]?([{valid}{valid.lower()}])[\)\]]?(?:\s*[.:)]\s*.*|\s*)",
        s,
        re.I | re.S,
    )
    if m and (len(s) <= 3 or re.match(r"(?i)(option|choice|answer)|[\(\[]|.[.:)]", s)):
        return m.group(1).upper()
    return None


def _unwrap_text(s: str) -> str:
    """Replace ``\\text{x}`` / ``\\mathrm{x}`` / ``\\textbf{x}`` by ``x``."""
    return re.sub(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}", r"\1", s)


_UNIT_WORDS = (
    r"(?:units?|cm|mm|km|m|kg|g|mg|s|sec|seconds?|min|minutes?|h|hours?|days?|years?|degrees?|deg|"
    r"inch(?:es)?|in|ft|feet|foot|yards?|miles?|meters?|cents?|dollars?|l|ml|liters?|litres?|"
    r"sq|square|cubic|cm\^2|cm\^3|m\^2|m\^3|[a-z]{1,3}\^[23]|[a-z]{1,3}/[a-z]{1,3})"
)


def normalize(answer: str) -> str:
    """A canonical string form: no spaces, dollars, units, degree or percent marks.

    >>> [normalize(s) for s in ["$\\\\dfrac{1}{2}$", "30^{\\\\circ}", "45 \\\\%", "12 cm", "\\\\text{Yes}.", "1,000"]]
    ['\\\\frac{1}{2}', '30', '45', '12', 'yes', '1000']
    """
    s = _unwrap_text(answer.strip())
    s = (
        s.replace("\\left", "")
        .replace("\\right", "")
        .replace("\\!", "")
        .replace("\\,", "")
        .replace("\\;", "")
    )
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"^(?:\\(?:euro|pounds)\s*|[€£¥])", "", s.strip())
    s = s.strip().rstrip(".").strip()
    # Units after a number: "12 cm", "5 m^2", "3 square units".
    s = re.sub(rf"^([-+]?[\d.,/\\{{}}a-z]*\d[\d.,/{{}}]*)\s*(?:{_UNIT_WORDS}\s*)+$", r"\1", s, flags=re.I)
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"\s+", "", s)
    if s.startswith("\\frac") is False and re.fullmatch(r"[-+]?\d+\.\d*0+", s):
        s = s.rstrip("0").rstrip(".")
    return s.lower()


def _math_equal(pred: str, gold: str) -> bool:
    """Symbolic equivalence through math-verify, sets against relations allowed (``x < 2`` equals
    ``(-\\infty, 2)``, ``x=2 \\text{ or } x=3`` equals ``2, 3``); False when either side does not parse."""
    from math_verify import parse, verify

    # math-verify's timeouts use signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${pred}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, allow_set_relation_comp=True, timeout_seconds=timeout))
    except Exception:  # a parser crash on odd LaTeX is a wrong answer, not a failed step
        return False


def is_equivalent(pred: str | None, gold: str, choices: dict[str, str] | None = None) -> bool:
    """Whether an extracted answer equals the ground truth (the ``default`` grader).

    Args:
        pred: the extracted answer (None: nothing was extracted, always wrong).
        gold: the ground truth, e.g. "B", "\\\\frac{3}{4}", "12 cm", "yes".
        choices: for multiple choice, letter -> option text; lets "12 cm" match gold "B" when
            option B is "12 cm", and "B" match gold "12 cm".

    Verdicts are cached: a run grades the same few (answer, gold) pairs again and again, and
    math-verify takes about 50 ms a pair on one CPU core.

    >>> is_equivalent("(B) 12", "B"), is_equivalent("0.75", "\\\\frac{3}{4}"), is_equivalent("7", "8")
    (True, True, False)
    >>> is_equivalent("B", "12 cm", {"A": "10 cm", "B": "12 cm"}), is_equivalent("x < 2", "(-\\\\infty, 2)")
    (True, True)
    """
    if pred is None or not pred.strip():
        return False
    return _equivalent(pred, gold, tuple(sorted(choices.items())) if choices else ())


_WORD = re.compile(r"[a-z]{2,}")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


@functools.lru_cache(maxsize=1 << 16)
def _equivalent(pred: str, gold: str, choices: tuple) -> bool:
    """:func:`is_equivalent` on a non-empty answer, ``choices`` as sorted (letter, text) pairs."""
    gold_box = extract_boxed(gold)
    gold = gold_box if gold_box is not None else gold
    gold_letter = choice_letter(gold) if len(gold.strip()) <= 3 else None
    if gold_letter is not None:
        pred_letter = choice_letter(pred)
        if pred_letter is not None:
            return pred_letter == gold_letter
        options = dict(choices)
        if gold_letter in options:
            return is_equivalent(pred, options[gold_letter])
        return False
    if choices:
        options = dict(choices)
        pred_letter = choice_letter(pred, "".join(options))
        if pred_letter is not None:
            return is_equivalent(options[pred_letter], gold)
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    if _WORD.fullmatch(p) and _WORD.fullmatch(g):
        return (
            False  # two different words ("red", "blue"): math-verify would read them as products of symbols
        )
    if _NUMBER.fullmatch(p) and _NUMBER.fullmatch(g):
        return abs(float(p) - float(g)) <= 1e-6 * max(1.0, abs(float(g)))
    return _math_equal(pred, gold) or _math_equal(p, g)


def grade(
    output: str, gold: str, choices: dict[str, str] | None = None, truncated: bool = False
) -> tuple[str | None, float]:
    """Extract the answer of a full model output and score it: (extracted answer, 1.0 or 0.0).
    ``truncated``: the output stopped at the token limit (then an unclosed thinking has no answer).

    >>> grade("<think>hmm</think>The count is \\\\boxed{4}.", "4")
    ('4', 1.0)
    >>> grade("I ran out of tokens while", "4")
    (None, 0.0)
    """
    pred = extract_answer(output, truncated)
    return pred, float(is_equivalent(pred, gold, choices))


def grade_strict(
    output: str, gold: str, choices: dict[str, str] | None = None, truncated: bool = False
) -> tuple[str | None, float]:
    """The original CRO reward, exactly: mathruler's ``extract_boxed_content`` on the whole output
    (thinking included, "None" when there is no box) and its ``grade_answer``. ``choices`` and
    ``truncated`` are ignored, as the original ignores them.

    >>> grade_strict("<think>maybe \\\\boxed{4}, or", "4"), grade_strict("\\\\boxed{B}", "12 cm", {"B": "12 cm"})
    (('4', 1.0), ('B', 0.0))
    """
    from mathruler.grader import extract_boxed_content, grade_answer

    pred = extract_boxed_content(output)
    return (None if pred == "None" else pred), float(grade_answer(pred, gold))


# name -> grade(output, gold, choices, truncated) -> (extracted answer or None, score)
GRADERS = {"default": grade, "strict": grade_strict}


def parse_choices(question: str) -> dict[str, str]:
    """Multiple-choice options written in a question, one per line ("A. x", "(B) y", "C: z").

    >>> parse_choices("Which?\\nChoices:\\nA. circle\\n(B) square")
    {'A': 'circle', 'B': 'square'}
    """
    found = re.findall(r"^\s*\(?([A-H])[.):]\s*(.+?)\s*$", question, re.M)
    return dict(found) if len(found) >= 2 else {}


# --- Captions that give the answer away ------------------------------------------------------------

# "the answer is X", "final answer: X", "the correct option is (B)", "answer = 5": the X up to the end of
# the clause (a decimal point is not an end).
_ANSWER_STATEMENT = re.compile(
    r"\b(?:final\s+|correct\s+|right\s+)?(?:answer|option|choice)\s*(?:is|would\s+be|should\s+be|must\s+be|=|:)\s*"
    r"(?P<x>(?:[^\n.;!?]|\.(?=\d))+)",
    re.I,
)
# "option B is correct", "(C) is the right answer"
_CHOICE_STATEMENT = re.compile(
    r"(?:\b(?:option|choice)\s*)?\(?\b(?P<x>[A-H])\b\)?\s+is\s+(?:the\s+)?(?:correct|right|answer)", re.I
)
# a caption whose last line is a bare choice: "B", "(B).", "Answer: (B)"
_FINAL_LETTER = re.compile(r"(?:answer\s*:?\s*)?\(?(?P<x>[A-H])\)?\.?", re.I)


def answer_statements(caption: str, choices: dict[str, str] | None = None) -> list[str]:
    """What a caption states *as an answer*: the content of every ``\\boxed{}``, the X of "the answer
    is X" (also "final answer: X", "the correct option is X"), "option X is correct", and, for a
    multiple-choice question, a bare choice letter on the caption's last line.

    A fact stated as a fact ("there are 5 apples", "the bar of 2019 reads 5") is not an answer
    statement, even when it equals the answer: stating what the figure shows is the caption's job.

    >>> answer_statements("Five apples. So the answer is 5.")
    ['5']
    >>> answer_statements("There are 5 apples.\\n(B)", {"A": "4", "B": "5"})
    ['B']
    """
    found = []
    for command in _BOX_COMMANDS:
        start = caption.find(command)
        while start != -1:
            content = _box_content(caption, start + len(command))
            if content is not None:
                found.append(content.strip())
            start = caption.find(command, start + 1)
    found += [m.group("x").strip() for m in _ANSWER_STATEMENT.finditer(caption)]
    if choices:
        found += [
            m.group("x") for m in _CHOICE_STATEMENT.finditer(caption) if m.group("x").upper() in choices
        ]
        lines = [line for line in caption.strip().splitlines() if line.strip()]
        last = _FINAL_LETTER.fullmatch(lines[-1].strip().strip("*")) if lines else None
        if last and last.group("x").upper() in choices:
            found.append(last.group("x").upper())
    return found


def caption_leak(caption: str, gold: str, choices: dict[str, str] | None = None) -> bool:
    """Whether a caption states the gold answer as an answer (see :func:`answer_statements`).

    Precision over recall: an answer statement must grade equal to the gold answer, so a caption
    that merely mentions a number of the figure is never counted, and a paraphrased give-away ("which
    makes B the one") is missed. The labelled set tests/data/leak_labelled.jsonl measures both.

    >>> caption_leak("Five apples. The answer is 5.", "5"), caption_leak("There are 5 apples.", "5")
    (True, False)
    """
    return any(is_equivalent(statement, gold, choices) for statement in answer_statements(caption, choices))
