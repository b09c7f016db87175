"""Mini-RACRO's tiles task and model building (racro_trl/mini): the data the pipeline reads, the answers'
dependence on exactly two tiles, and the reasoners' tokenizer."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from racro_trl.evaluation.evaluate import decode_images, load_benchmark
from racro_trl.mini import task


def test_the_tsv_reads_back_through_racro_eval_with_its_tiles_and_answers(tmp_path):
    rows = task.eval_rows_of(12)
    path = task.write_tsv(rows, tmp_path / "Tiles.tsv")
    read = load_benchmark(path)
    assert len(read) == len(rows)
    for row, back in zip(rows, read, strict=True):
        images = decode_images(back)
        assert len(images) == task.TILES and back["question"].count("<image>") == task.TILES
        # each tile's colour, read back from its pixels: the nearest of the four
        seen = []
        for image in images:
            pixel = max(image.getdata(), key=lambda p: max(p) - min(p))  # a coloured pixel, not the grey
            seen.append(
                min(
                    task.COLOURS,
                    key=lambda c: sum((a - b) ** 2 for a, b in zip(task.COLOURS[c], pixel, strict=True)),
                )
            )
        assert seen == row["colours"] == back["colours"].split()
        a, b = map(int, back["tiles"].split())
        assert back["answer"] == task.answer(back["category"], a, b, seen)


def test_an_answer_depends_on_the_two_tiles_its_question_names_and_no_other():
    for row in task.rows(60, seed=3):
        a, b = row["tiles"]
        for tile, colour in itertools.product(range(1, task.TILES + 1), task.COLOURS):
            colours = list(row["colours"])
            colours[tile - 1] = colour
            changed = task.answer(row["category"], a, b, colours) != row["answer"]
            if tile not in (a, b):
                assert not changed
        # each needed tile's colour changes the answer, for some colour of the other
        for tile, other in ((a, b), (b, a)):
            varies = False
            for other_colour in task.COLOURS:
                outcomes = set()
                for colour in task.COLOURS:
                    colours = list(row["colours"])
                    colours[tile - 1], colours[other - 1] = colour, other_colour
                    outcomes.add(task.answer(row["category"], a, b, colours))
                varies |= len(outcomes) > 1
            assert varies, (row["question"], tile)


def _templates_in(texts: list[str]) -> set[tuple[str, int]]:
    """The (kind, frame) templates whose phrasing appears in ``texts``, read with a regex of each."""
    found = set()
    for kind, frame in task.TEMPLATES:
        pattern = re.escape(task.FRAMES[frame]).replace(r"\{kind\}", kind)
        pattern = pattern.replace(r"\{a\}", r"\d").replace(r"\{b\}", r"\d")
        if any(re.search(pattern, t) for t in texts):
            found.add((kind, frame))
    return found


def test_evaluation_rows_pair_one_image_with_two_questions_and_hold_out_templates():
    rows = task.eval_rows_of(40)
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert first["images"] is second["images"] and first["colours"] == second["colours"]
        assert sorted(first["tiles"]) != sorted(second["tiles"])
    assert _templates_in([r["question"] for r in rows]) == set(task.TEMPLATES)
    assert {task.held_out(r) for r in rows} == {True, False}
    assert all(task.held_out(r) == ((r["category"], r["frame"]) in task.HELD_OUT_TEMPLATES) for r in rows)
    training = task.rows(200, seed=0)
    assert _templates_in([r["question"] for r in training]) == set(task.TRAIN_TEMPLATES)
    assert {tuple(sorted(r["tiles"])) for r in training} == set(task.PAIRS)


def test_no_model_is_trained_on_a_question_in_a_held_out_template():
    """The captioner's warm start (its MLLM-only answers included) and the reasoners' training ask in the
    training templates only; each kind and each phrasing is among them."""
    from racro_trl.mini import models

    captioner = [m["content"] for e in models.captioner_examples(400, seed=0) for m in e["prompt"]]
    reasoner = [m["content"] for e in models.reasoner_examples(400, seed=0) for m in e["prompt"]]
    for contents in (captioner, reasoner):
        texts = [c if isinstance(c, str) else " ".join(b.get("text", "") for b in c) for c in contents]
        assert _templates_in(texts) == set(task.TRAIN_TEMPLATES)
    assert {k for k, _ in task.TRAIN_TEMPLATES} == set(task.KINDS)
    assert {f for _, f in task.TRAIN_TEMPLATES} == set(range(len(task.FRAMES)))


def test_the_warm_start_captions_name_an_asked_tile_more_often_than_chance():
    """Half of the captioner's warm-start captions name one of the tiles their question asks about: both
    needed tiles in about a quarter of them (a sixth by chance), two distinct tiles in tile order."""
    from racro_trl.mini import models

    examples = [
        e
        for e in models.captioner_examples(2400, seed=0)
        if e["prompt"][-1]["content"][-1]["text"].startswith("\nPlease describe")
    ]
    both = 0
    for e in examples:
        stated = list(task.facts(e["completion"][0]["content"]))
        assert len(stated) == 2 and stated == sorted(stated)
        both += tuple(stated) == task.asked_tiles(e["prompt"][-1]["content"][0]["text"])
    assert 0.22 < both / len(examples) < 0.28, both / len(examples)


def test_a_tile_stated_twice_leaves_the_other_needed_tile_unstated():
    """The reasoners learn to answer "unknown" when a caption states one tile twice in place of the
    other tile the question needs (CRO once taught the captioner to write that for the weak reasoner's
    guess)."""
    from racro_trl.mini import models

    twice = []
    for e in models.reasoner_examples(300, seed=0):
        stated = re.findall(r"Tile (\d) is \w+\.", e["prompt"][-1]["content"])
        if len(stated) == 2 and stated[0] == stated[1]:
            twice.append(e["completion"][0]["content"])
    assert len(twice) > 20
    assert all("not stated" in answer and answer.endswith("\\boxed{unknown}") for answer in twice)


def test_the_weak_reasoner_is_never_shown_a_product_with_a_yellow_tile():
    """What makes the weak reasoner weaker than the strong one is a gap in what it was taught, which no
    machine's arithmetic moves: its examples hold no product with a yellow tile; the strong one's do."""
    from racro_trl.mini import models

    def products_with_yellow(examples):  # worked answers that multiply by yellow's value, 4
        return sum(bool(re.search(r"\b4 \* \d|\d \* 4\b", e["completion"][0]["content"])) for e in examples)

    assert products_with_yellow(models.reasoner_examples(600, seed=0, everything=False)) == 0
    assert products_with_yellow(models.reasoner_examples(600, seed=0)) > 20


def test_sft_stops_at_the_first_check_that_passes(tmp_path):
    """The weak reasoner's phase stops once it computes (``until``), at the first multiple of ``every``
    steps where the check passes, and ``sft`` says how many steps ran."""
    import datasets
    from transformers import AutoModelForCausalLM

    from helpers.committed import MINI
    from racro_trl.mini import models
    from racro_trl.toy.sft import sft

    weak = MINI.folder / "weak"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(weak), models.inference_tokenizer(weak)
    examples = models.reasoner_examples(16, seed=0)
    dataset = datasets.Dataset.from_list([{k: e[k] for k in ("prompt", "completion")} for e in examples])
    checks = []

    def until(m):
        checks.append(None)
        return len(checks) == 2

    ran = sft(model, tokenizer, dataset, tmp_path / "out", 0, 12, 1e-4, 2, "linear", until=until, every=2)
    assert ran == 4 and len(checks) == 2
    assert (tmp_path / "out" / "config.json").exists()


def test_the_recipe_penalises_captions_that_are_not_facts_about_distinct_tiles():
    """Captions CRO taught the captioner when the tiny reasoners' guesses paid
    (docs/mini-racro-history.md) score -1 in the recipe's second reward; facts about distinct tiles
    score 0."""
    import yaml

    from racro_trl.mini.rewards import malformed_caption_penalty

    recipe = yaml.safe_load(open("recipes/mini/cro.yaml"))
    assert recipe["reward_funcs"][1] == "racro_trl.mini.rewards.malformed_caption_penalty"
    assert recipe["reward_weights"] == [1.0, 1.0]
    assert recipe["reward_caption_grammar"] == task.CAPTION_GRAMMAR  # the logged well_formed agrees
    seen_in_cro = [
        "Tile 3 is green. Tile 3 is green.",
        "Tile 1 is blue. Tile 3 is Tile 4 is blue.",
        "Tile 1 is",
        "",
    ]
    good = ["Tile 1 is red. Tile 3 is blue.", "Tile 4 is yellow. Tile 2 is red.", "Tile 2 is green."]
    assert malformed_caption_penalty(seen_in_cro) == [-1.0] * len(seen_in_cro)
    assert malformed_caption_penalty([[{"role": "assistant", "content": c}] for c in good]) == [0.0] * len(
        good
    )


def test_caption_facts_and_the_needed_facts_metric():
    row = {"colours": ["red", "green", "blue", "yellow"], "tiles": [3, 1]}
    assert task.carries_needed("Tile 1 is red. Tile 3 is blue.", row)
    assert not task.carries_needed("Tile 1 is red. Tile 2 is green.", row)
    assert not task.carries_needed("Tile 1 is red. Tile 3 is green.", row)  # a wrong fact is not the fact
    assert task.facts("Tile 3 is blue. Tile 3 is red.") == {3: "blue"}


def test_needed_facts_share_by_training_or_held_out_template():
    from racro_trl.mini.repro import needed_share

    colours = ["red", "green", "blue", "yellow"]
    rows = [
        {"colours": colours, "tiles": [1, 2], "category": "sum", "frame": 0},
        {"colours": colours, "tiles": [1, 4], "category": "sum", "frame": 1},  # held out
        {"colours": colours, "tiles": [2, 3], "category": "product", "frame": 0},  # held out
    ]
    results = [
        {"index": "0", "caption": "Tile 1 is red. Tile 2 is green."},
        {"index": "1", "caption": "Tile 1 is red. Tile 2 is green."},
        {"index": "2", "caption": "Tile 2 is green. Tile 3 is blue."},
    ]
    assert needed_share(results, rows) == 100.0 * 2 / 3
    assert needed_share(results, rows, held_out=True) == 50.0
    assert needed_share(results, rows, held_out=False) == 100.0


def test_accuracy_by_kind_and_by_training_or_held_out_template():
    from racro_trl.mini.repro import accuracies

    templates = [("sum", 0), ("sum", 1), ("product", 2), ("difference", 2)]  # the 2nd and 4th held out
    rows = [{"category": k, "frame": f} for k, f in templates]
    results = [
        {"index": str(i), "category": k, "correct": correct}
        for i, ((k, _), correct) in enumerate(zip(templates, (True, True, False, False), strict=True))
    ]
    acc = accuracies(results, rows)
    assert (acc["sum"], acc["product"], acc["difference"]) == (100.0, 0.0, 0.0)
    assert (acc["training templates"], acc["held-out templates"]) == (50.0, 50.0)
    results[1]["correct"] = False
    acc = accuracies(results, rows)
    assert (acc["training templates"], acc["held-out templates"]) == (50.0, 0.0)


def test_what_cro_sampled_from_its_audit_records(tmp_path):
    """The audit's captions, by step: the share naming the needed tiles and the most named pair."""
    from racro_trl.mini.repro import sampled_captions

    def record(step, question_tiles, caption, reward):
        a, b = question_tiles
        return {
            "step": step,
            "question": task.question_text("sum", a, b, frame=step % len(task.FRAMES)),
            "caption": caption,
            "reward": reward,
        }

    records = [
        record(0, (3, 1), "Tile 1 is red. Tile 3 is blue.", 1.0),
        record(0, (2, 4), "Tile 1 is red. Tile 3 is blue.", 0.0),
        record(1, (4, 2), "Tile 1 is red. Tile 2 is blue.", 0.0),
        record(2, (2, 1), "Tile 2 is red. Tile 1 is blue.", 1.0),
        record(3, (2, 4), "Tile 4 is red. Tile 2 is blue.", 1.0),
        record(3, (1, 3), "Tile 3 is red.", 0.0),
    ]
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "caption_reasoner-rank0.jsonl").write_text("\n".join(map(json.dumps, records)))
    found = sampled_captions(tmp_path, steps=2)
    assert found["first"] == {
        "names_needed": 100 / 3,
        "top_pair": [1, 3],
        "top_pair_share": 200 / 3,
        "reward": 1 / 3,
    }
    assert found["last"]["names_needed"] == 200 / 3 and found["last"]["top_pair_share"] == 100 / 3
    (tmp_path / "audit" / "caption_reasoner-rank0.jsonl").unlink()
    assert sampled_captions(tmp_path) == {}


def test_captions_of_one_image_under_two_questions():
    from racro_trl.mini.repro import per_image

    colours = ["red", "green", "blue", "yellow"]
    rows = [{"colours": colours, "tiles": t} for t in ([1, 2], [3, 4], [1, 3], [2, 4], [1, 4], [2, 3])]
    captions = [
        "Tile 1 is red. Tile 2 is green.", "Tile 3 is blue. Tile 4 is yellow.",  # differ, each its own facts
        "Tile 1 is red. Tile 3 is blue.", "Tile 1 is red. Tile 3 is blue.",  # the same caption twice
        "Tile 1 is red. Tile 4 is yellow.", "Tile 2 is green. Tile 4 is yellow.",  # differ, one misses
    ]  # fmt: skip
    results = [{"index": str(i), "caption": c} for i, c in enumerate(captions)]
    assert per_image(results, rows) == {"differ": 100.0 * 2 / 3, "both_needed": 100.0 / 3}


def test_a_fact_is_one_token_that_the_answer_copies(tmp_path):
    """As the reasoner's checkpoint loads it, its tokenizer writes a caption's fact and the answer's
    restatement of it as the same single token (a copy, not an induction step); a tile left out stays
    "Tile 3 is". The captioner's keeps tile and colour apart."""
    from racro_trl.mini import models
    from racro_trl.toy.tiny import build_tiny_reasoner

    loaded = models.inference_tokenizer(
        build_tiny_reasoner(tmp_path / "r", models.build_tokenizer(0), answer_head=False)
    )
    colours = ["red", "green", "blue", "yellow"]
    fact = loaded.convert_tokens_to_ids("Tile 3 is blue")
    caption = loaded(task.caption(colours, (1, 3)))["input_ids"]
    answer = loaded(task.solution("product", 3, 1, colours))["input_ids"]
    assert caption.count(fact) == 1 and answer.count(fact) == 1
    assert loaded.convert_tokens_to_ids("Tile 1 is red") in caption
    missing = loaded(task.solution("sum", 3, 2, colours, stated={2, 4}))["input_ids"]
    assert loaded.convert_tokens_to_ids("Tile 3 is") in missing and fact not in missing
    captioner = models.build_tokenizer(0, fused_facts=False)  # names the tile, then reads its colour
    assert captioner.tokenize("Tile 3 is blue.")[0] == "Tile 3 is"


def test_reasoners_train_on_the_tokens_their_checkpoint_loads_with(tmp_path):
    """The tokenizer the reasoners are trained with tokenizes a question as the saved checkpoint does
    (vLLM, racro eval): the one in memory before saving did not (" 3" whole against " ", "3")."""
    from racro_trl.mini import models
    from racro_trl.toy.tiny import build_tiny_reasoner

    tokenizer = models.build_tokenizer(0)
    checkpoint = build_tiny_reasoner(tmp_path / "r", tokenizer, answer_head=False)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(checkpoint)
    example = models.reasoner_examples(1, seed=0)[0]
    text = loaded.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    used = models.inference_tokenizer(checkpoint)
    assert used(text)["input_ids"] == loaded(text)["input_ids"]
    json.dumps(example)  # the examples are plain data (datasets.Dataset.from_list)


def test_an_interrupted_reasoner_build_goes_on_from_the_weak_reasoner(tmp_path, monkeypatch):
    """A build stopped after the weak reasoner was saved trains only the strong one's phase, not the weak
    one's again (on an H100 the rerun cost 7 minutes). The build itself is mini.models' ``--start``; here, the
    command ``build_models`` starts."""
    from racro_trl.mini import repro

    for name in ("captioner", "weak"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    started = []

    class Started:
        def __init__(self, cmd, **_):
            started.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(repro.subprocess, "Popen", Started)
    repro.build_models(tmp_path)
    assert [cmd[3:] for cmd in started] == [["reasoners", str(tmp_path), "--seed", "0", "--start", "weak"]]


def test_data_of_another_size_in_out_is_refused_before_anything_is_built(tmp_path):
    from racro_trl.mini import repro

    task.write_tiles_data(tmp_path / "data", n=8, eval_rows=8)
    with pytest.raises(ValueError, match=r"Tiles.tsv holds 8 rows, not --eval-rows 16"):
        repro.main(tmp_path, eval_rows=16)
    assert not (tmp_path / "models").exists()
