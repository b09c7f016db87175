"""How captions read: the figures that tell language from a private code (racro_trl.training.caption_health), and
the colour task's reader, which pays only for captions a person reads."""

import json
import random

import pytest

from racro_trl.reporting.run_summary import late_captions
from racro_trl.toy.colour_task import CAPTION_GRAMMAR, COLOURS, QUESTION, caption, learned
from racro_trl.training.caption_health import known_word_share, mean_known_words, well_formed_share
from racro_trl.training.rewards import CaptionReward

# Captions the AVX-512 collapse wrote (issue: step 8 on, reward still 0.6).
COLLAPSED = ["TheTheTheTheTheTheTheThe", "ss red cr yellow....", "mlasbzroiqia u", "mohdzshs skbzzd"]


def english_salad(rng: random.Random, colour: str) -> str:
    """Random English words (wordfreq's most common) around a colour name."""
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", 2000) if w.isalpha()]
    salad = [rng.choice(words) for _ in range(rng.randint(2, 6))]
    salad.insert(rng.randint(0, len(salad)), colour)
    return " ".join(salad).capitalize() + "."


def write_audit(path, records_by_step):
    path.mkdir(parents=True)
    with (path / "caption_reasoner-rank0.jsonl").open("w") as f:
        for step, records in records_by_step.items():
            f.writelines(json.dumps({"step": step, **r}) + "\n" for r in records)


def test_readable_captions_score_high_and_the_collapse_low():
    readable = [caption(c) for c in COLOURS] + ["A red circle and two blue squares on a white background."]
    assert mean_known_words(readable) == 1.0
    assert mean_known_words(COLLAPSED[2:]) <= 0.25  # "u" is an English word (slang)
    assert known_word_share("TheTheThe shape is red.") == 0.75
    assert well_formed_share(readable[:4], CAPTION_GRAMMAR) == 1.0
    assert well_formed_share(COLLAPSED, CAPTION_GRAMMAR) == 0.0


def test_random_words_that_name_the_colour_fail_the_learning_check(tmp_path):
    """A policy whose captions are random English words that include the gold colour, rewarded as a
    reader that boxes any colour word would reward them (1.0 each): its reward passes, its words are
    English, and only the well-formed check fails it."""
    rng = random.Random(0)
    steps = {}
    for step in range(10):
        golds = [COLOURS[i % 4] for i in range(32)]
        steps[step] = [
            {"gold": g, "caption": english_salad(rng, g), "reward": 1.0 if step >= 5 else 0.25} for g in golds
        ]
    write_audit(tmp_path / "audit", steps)
    late = late_captions(tmp_path / "audit", grammar=CAPTION_GRAMMAR)
    assert late["reward"] == 1.0 and late["well_formed"] == 0.0
    assert mean_known_words([r["caption"] for r in steps[9]]) > 0.9  # words a person knows, in no sentence
    assert learned(0.25, 1.0, late) == ["well-formed 0.00 < 0.9"]
    # the same run with well-formed captions passes
    for records in steps.values():
        for r in records:
            r["caption"] = caption(r["gold"])
    write_audit(tmp_path / "well-formed", steps)
    assert learned(0.25, 1.0, late_captions(tmp_path / "well-formed", grammar=CAPTION_GRAMMAR)) == []


def test_a_colour_given_up_fails_the_learning_check(tmp_path):
    """The AVX-512 collapse's last steps: three colours near 0.9, red near 0 (mean 0.66)."""
    per_colour = {"red": 0.0, "green": 0.875, "blue": 0.875, "yellow": 0.875}
    records = [
        {"gold": c, "caption": caption(c), "reward": float(i < per_colour[c] * 8)}
        for c in COLOURS
        for i in range(8)
    ]
    write_audit(tmp_path / "audit", {step: records for step in range(5)})
    late = late_captions(tmp_path / "audit", grammar=CAPTION_GRAMMAR)
    assert late["worst_answer"] == ("red", 0.0)
    assert "red reward 0.00 < 0.6" in learned(0.2, 0.9, late)


@pytest.mark.slow
def test_the_reader_pays_only_for_well_formed_captions(colour_models):
    """The reader boxes the colour of every well-formed caption, and ``none`` for the same colour inside
    English words it never saw in training or inside gibberish: a captioner earns nothing by leaving
    the sentence (the reader that boxed any colour word paid for ``mohdzshs skbzzd``-like codes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from racro_trl.reasoning import prompts

    model = AutoModelForCausalLM.from_pretrained(colour_models["reader"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(colour_models["reader"], padding_side="left")

    def boxed(captions: list[str]) -> list[str]:
        texts = [
            tokenizer.apply_chat_template(
                prompts.reasoner_reward_messages(c, QUESTION), tokenize=False, add_generation_prompt=True
            )
            for c in captions
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    rng = random.Random(1234)
    golds = [rng.choice(COLOURS) for _ in range(48)]
    gibberish = [
        " ".join(
            ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(3)] + [g]
        )
        for g in golds
    ]
    assert boxed([caption(g) for g in golds]) == [f"\\boxed{{{g}}}" for g in golds]
    for name, captions in (
        ("English words", [english_salad(rng, g) for g in golds]),
        ("gibberish", gibberish),
    ):
        answers = boxed(captions)
        paid = [(c, a) for c, a, g in zip(captions, answers, golds, strict=True) if g in a]
        assert len(paid) <= 2, (
            f"the reader boxed the colour of {len(paid)} of 48 captions of {name}: {paid[:5]}"
        )


def test_the_colour_recipe_checks_the_readers_grammar():
    """The grammar the recipe logs well_formed against is the one the reader was trained on."""
    from pathlib import Path

    import yaml

    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes/tiny/cro_colour.yaml").read_text())
    assert recipe["reward_caption_grammar"] == CAPTION_GRAMMAR
    assert sorted(recipe["reward_answer_classes"]) == sorted(COLOURS)


@pytest.mark.slow
def test_the_reward_logs_how_its_captions_read_and_each_colours_reward(colour_models):
    """With the real reader (transformers backend): the logged well_formed, known_words and per-colour
    rewards are those of the captions and rewards of the call."""
    from racro_trl.reasoning.reasoners import Sampling, build_reasoner

    reward = CaptionReward(
        build_reasoner("transformers", str(colour_models["reader"])),
        sampling=Sampling(temperature=0, max_tokens=6),  # greedy: the reader's answers are fixed
        grammar=CAPTION_GRAMMAR,
        answer_classes=list(COLOURS),
    )
    golds = ["red"] * 4 + ["green"] * 4 + ["blue"] * 4
    captions = [caption("red")] * 3 + ["mohdzshs skbzzd red"] + [caption("green"), caption("blue")] * 2
    captions += ["TheTheThe shape is blue.", caption("blue"), caption("red"), "ss red cr blue...."]
    logged = {}
    rewards = reward(None, captions, question=[QUESTION] * 12, answer=golds, log_metric=logged.__setitem__)
    reward.close()
    by_colour = {g: [r for r, gold in zip(rewards, golds, strict=True) if gold == g] for g in set(golds)}
    for colour, scored in by_colour.items():
        assert logged[f"caption_reasoner/reward_by_answer/{colour}"] == pytest.approx(sum(scored) / 4)
    assert "caption_reasoner/reward_by_answer/yellow" not in logged  # no yellow in the call
    assert by_colour["red"][:3] == [1.0, 1.0, 1.0] and by_colour["red"][3] == 0.0  # code earns nothing
    assert logged["caption_reasoner/well_formed"] == pytest.approx(9 / 12)
    assert logged["caption_reasoner/known_words"] == pytest.approx(mean_known_words(captions))
