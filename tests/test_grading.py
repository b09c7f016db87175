"""Answer extraction and grading on outputs shaped like real reasoner outputs."""

import pytest

from racro_trl.reasoning.grading import (
    choice_letter,
    extract_answer,
    extract_boxed,
    grade,
    is_equivalent,
    normalize,
    parse_choices,
)

R1 = "<think>\nLet me count. Maybe \\boxed{{2}}? No, wait.\n</think>\n\nThere are three circles, so the answer is \\boxed{{{}}}."


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("The answer is \\boxed{4}.", "4"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{3}{4}}} cm", "\\sqrt{\\frac{3}{4}}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("complete \\boxed{1} then truncated \\boxed{\\frac{2", "1"),
        ("\\fbox{B}", "B"),
        ("$\\boxed 7$", "7"),
        ("no box here, the answer is 5", None),
        ("\\boxed{}", ""),
        (R1.format("3"), "3"),
        ("<think>truncated while thinking \\boxed{9}", None),  # cut off inside its thinking: no answer
    ],
)
def test_extract(output, expected):
    assert extract_answer(output) == expected


def test_thinking_box_is_ignored_once_closed():
    assert extract_answer(R1.format("3")) == "3"
    assert extract_boxed(R1.format("3")) == "3"
    assert extract_answer("<think>\\boxed{2}</think> I give up.") is None


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("3", "3"),
        ("3.0", "3"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("3/4", "\\frac{3}{4}"),
        ("50\\%", "50"),
        ("50%", "50\\%"),
        ("30^\\circ", "30"),
        ("30°", "30^{\\circ}"),
        ("12 cm", "12"),
        ("12", "12\\text{ cm}"),
        ("5 m^2", "5"),
        ("1,000", "1000"),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("\\pi", "\\pi"),
        ("x=4", "4"),
        ("\\text{Yes}", "yes"),
        ("Red", "red"),
        ("(B)", "B"),
        ("B", "B"),
        ("B. 12 cm", "B"),
        ("C: triangle", "C"),
        ("\\text{(A)}", "A"),
        ("option D", "D"),
        ("-\\frac{1}{3}", "-1/3"),
    ],
)
def test_equivalent(pred, gold):
    assert is_equivalent(pred, gold), (pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("4", "3"),
        ("\\frac{1}{3}", "0.5"),
        ("B", "A"),
        ("(C)", "A"),
        ("blue", "red"),
        ("51", "50\\%"),
        ("", "3"),
        (None, "3"),
        ("3x", "3"),
        ("12 cm", "A"),  # a value for a choice question, without the options to map it
    ],
)
def test_not_equivalent(pred, gold):
    assert not is_equivalent(pred, gold)


def test_choice_text_matches_letter_with_options():
    choices = parse_choices("What is the side length?\nChoices:\nA. 10 cm\nB. 12 cm\nC. 14 cm")
    assert choices == {"A": "10 cm", "B": "12 cm", "C": "14 cm"}
    assert is_equivalent("12 cm", "B", choices)
    assert is_equivalent("12", "B", choices)
    assert not is_equivalent("14", "B", choices)


def test_choice_letter_does_not_misread_words():
    assert choice_letter("A") == "A"
    assert choice_letter("a.") == "A"
    assert choice_letter("Apple") is None
    assert choice_letter("Blue") is None
    assert choice_letter("I think") is None


def test_normalize_keeps_meaningful_text():
    assert normalize("x + 1") == "x+1"
    assert normalize("\\frac{1}{2}.") == "\\frac{1}{2}"


@pytest.mark.parametrize(
    ("output", "gold", "score"),
    [
        ("<think>...</think>So the count is \\boxed{4}.", "4", 1.0),
        ("<think>...</think>\\boxed{5}", "4", 0.0),
        ("I ran out of tokens befo", "4", 0.0),  # truncated: no box, scored 0
        ("The answer: \\boxed{(B)}", "B", 1.0),
        ("\\boxed{\\frac{6}{8}}", "\\frac{3}{4}", 1.0),
        ("\\boxed{\\left(1, 2\\right)}", "(1,2)", 1.0),
    ],
)
def test_grade(output, gold, score):
    assert grade(output, gold)[1] == score
