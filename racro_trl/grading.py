"""Answer extraction and equivalence: the part of the reward that decides 1.0 or 0.0.

The original CRO reward takes the content of the last ``\\boxed{...}`` of the reasoner's output and
compares it to the ground truth with mathruler's ``grade_answer``. We do the same in three steps:
strip the R1 ``<think>`` block, extract the last box (nested braces allowed), then decide
equivalence by (1) multiple-choice letters, (2) normalised strings (units, degrees, percent,
``\\dfrac``...), (3) math-verify's symbolic comparison.
"""

from __future__ import annotations

import re
import threading

_CHOICE_LETTERS = "ABCDEFGH"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def strip_thinking(text: str) -> str:
    """Drop an R1-style reasoning block: everything up to the last ``</think>``.

    >>> strip_thinking("<think>maybe \\\\boxed{1}</think> So \\\\boxed{2}.")
    ' So \\\\boxed{2}.'
    """
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
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


def extract_answer(output: str) -> str | None:
    """The final answer of a model output: last box after the reasoning block, or None."""
    return extract_boxed(strip_thinking(output))


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
    r"sq|square|cubic|cm\^2|cm\^3|m\^2|m\^3|[a-z]{1,3}\^[23])"
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
    s = s.replace("\\%", "").replace("%", "").replace("$", "")
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
    """Symbolic equivalence through math-verify; False when either side does not parse."""
    from math_verify import parse, verify

    # math-verify's timeouts use signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${pred}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # a parser crash on odd LaTeX is a wrong answer, not a failed step
        return False


def is_equivalent(pred: str | None, gold: str, choices: dict[str, str] | None = None) -> bool:
    """Whether an extracted answer equals the ground truth.

    Args:
        pred: the extracted answer (None: nothing was extracted, always wrong).
        gold: the ground truth, e.g. "B", "\\\\frac{3}{4}", "12 cm", "yes".
        choices: for multiple choice, letter -> option text; lets "12 cm" match gold "B" when
            option B is "12 cm".

    >>> is_equivalent("(B) 12", "B"), is_equivalent("0.75", "\\\\frac{3}{4}"), is_equivalent("7", "8")
    (True, True, False)
    """
    if pred is None or not pred.strip():
        return False
    gold_box = extract_boxed(gold)
    gold = gold_box if gold_box is not None else gold
    gold_letter = choice_letter(gold) if len(gold.strip()) <= 3 else None
    if gold_letter is not None:
        pred_letter = choice_letter(pred)
        if pred_letter is not None:
            return pred_letter == gold_letter
        if choices and gold_letter in choices:
            return is_equivalent(pred, choices[gold_letter])
        return False
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    return _math_equal(p, g)


def grade(output: str, gold: str, choices: dict[str, str] | None = None) -> tuple[str | None, float]:
    """Extract the answer of a full model output and score it: (extracted answer, 1.0 or 0.0).

    >>> grade("<think>hmm</think>The count is \\\\boxed{4}.", "4")
    ('4', 1.0)
    >>> grade("I ran out of tokens while", "4")
    (None, 0.0)
    """
    pred = extract_answer(output)
    return pred, float(is_equivalent(pred, gold, choices))


def parse_choices(question: str) -> dict[str, str]:
    """Multiple-choice options written in a question, one per line ("A. x", "(B) y", "C: z").

    >>> parse_choices("Which?\\nChoices:\\nA. circle\\n(B) square")
    {'A': 'circle', 'B': 'square'}
    """
    found = re.findall(r"^\s*\(?([A-H])[.):]\s*(.+?)\s*$", question, re.M)
    return dict(found) if len(found) >= 2 else {}
