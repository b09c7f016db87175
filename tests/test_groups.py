"""Groups that teach nothing (racro_trl/training/groups.py): their share is logged, and leaving them out of the
training pass keeps the gradient.

One real generation batch of the tiny policy through ``CROTrainer`` (TRL's transformers sampler on CPU),
four questions of four captions, images of four sizes so that the rows' patches differ; the reward is
fixed per caption so that two of the four groups score all the same. Then TRL's own loss
(``_compute_loss``) is differentiated on the whole batch and on the batch without those groups.
"""

import pytest
import torch

from racro_trl.training.groups import informative_rows, keep_rows

# per caption, 4 groups of 4: all 1, mixed, all 0, mixed
REWARDS = [1.0] * 4 + [1.0, 0.0, 0.0, 1.0] + [0.0] * 4 + [0.0, 1.0, 1.0, 1.0]


def caption_reasoner(completions, **kwargs):
    """The fixed rewards of the test, in the batch's order (named as the CRO reward is logged)."""
    return REWARDS[: len(completions)]


def make_trainer(policy, tmp_path, beta=0.0, loss_type="dapo", drop=False):
    import datasets
    from PIL import Image
    from transformers import AutoProcessor
    from trl import GRPOConfig, ModelConfig

    from racro_trl.reasoning.prompts import caption_messages
    from racro_trl.training.configs import CROScriptArguments
    from racro_trl.training.trainer import CROTrainer

    sizes = [(56, 56), (112, 56), (56, 112), (112, 112)]
    rows = [
        {
            "prompt": caption_messages(f"<image>What is in figure {i}?", 1),
            "images": [Image.new("RGB", size, (50 * i, 120, 200 - 40 * i))],
        }
        for i, size in enumerate(sizes)
    ]
    args = GRPOConfig(
        output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, report_to="none", seed=0,
        per_device_train_batch_size=16, num_generations=4, max_completion_length=6, temperature=1.0,
        beta=beta, loss_type=loss_type, gradient_checkpointing=False,
    )  # fmt: skip
    trainer = CROTrainer(
        model=str(policy),
        reward_funcs=[caption_reasoner],
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=AutoProcessor.from_pretrained(policy),
        script_args=CROScriptArguments(reward_funcs=[], drop_zero_variance_groups=drop),
        model_args=ModelConfig(),
    )
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    batch = [row for row in rows for _ in range(args.num_generations)]
    return trainer, batch


def gradient(trainer, inputs) -> torch.Tensor:
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, inputs).backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


def test_dropping_zero_variance_groups_keeps_the_gradient(tiny_models, tmp_path):
    trainer, batch = make_trainer(tiny_models["policy"], tmp_path, drop=True)
    trainer.drop_zero_variance = False  # the whole batch first, then the same batch dropped
    full = trainer._generate_and_score_completions(batch)
    assert trainer._metrics["train"]["caption_reasoner/zero_variance_groups"][-1] == 0.5

    dropped = trainer._drop_zero_variance(full)
    assert trainer._metrics["train"]["dropped_rows"][-1] == 0.5
    assert dropped["completion_ids"].shape[0] == 8
    assert torch.equal(dropped["completion_ids"], full["completion_ids"][[4, 5, 6, 7, 12, 13, 14, 15]])
    # each kept row keeps its own image: the patches of rows 4-7 (112 x 56) and 12-15 (112 x 112)
    assert dropped["image_grid_thw"].tolist() == full["image_grid_thw"][[4, 5, 6, 7, 12, 13, 14, 15]].tolist()
    assert dropped["pixel_values"].shape[0] == int(dropped["image_grid_thw"].prod(-1).sum())

    whole, without = gradient(trainer, full), gradient(trainer, dropped)
    assert whole.norm() > 0
    torch.testing.assert_close(without, whole, rtol=1e-5, atol=1e-7)


def test_with_a_kl_term_the_dropped_groups_kl_is_what_is_lost(tiny_models, tmp_path, capsys):
    """beta > 0: the dropped rows' KL term is the whole difference (measured against the policy moved off
    its reference, where the KL has a gradient)."""
    trainer, batch = make_trainer(tiny_models["policy"], tmp_path, beta=0.04)
    with torch.no_grad():  # move the policy off the reference model
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    full = trainer._generate_and_score_completions(batch)
    rows = informative_rows(full["advantages"])
    zero_rows = torch.tensor([i for i in range(16) if i not in rows.tolist()])
    whole, without = gradient(trainer, full), gradient(trainer, keep_rows(full, rows))
    zero_only = keep_rows(full, zero_rows)  # the dropped rows alone: advantage 0, so only their KL term
    lost = gradient(trainer, zero_only)
    torch.testing.assert_close(without + lost, whole, rtol=1e-4, atol=1e-6)
    share = (lost.norm() / whole.norm()).item()
    assert share > 0
    with capsys.disabled():
        print(
            f"\nbeta 0.04, policy moved off its reference: the dropped groups' KL gradient is {share:.1%} of the whole"
        )


def test_the_drop_refuses_losses_it_would_change(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="loss_type 'grpo' averages over the rows"):
        make_trainer(tiny_models["policy"], tmp_path, loss_type="grpo", drop=True)


def test_the_share_reads_only_this_batchs_rewards(tiny_models, tmp_path):
    """TRL keeps one reward log for train and eval batches: a smaller batch after a train batch is
    measured on its own rewards, not on the train rewards still in the log."""
    trainer, _ = make_trainer(tiny_models["policy"], tmp_path)
    trainer._logs["rewards"]["caption_reasoner"].extend(REWARDS)  # a train batch: 2 of 4 groups all equal
    trainer._logs["rewards"]["caption_reasoner"].extend([0.0, 1.0, 1.0, 1.0])  # then one mixed group
    trainer._log_zero_variance_groups("eval", 4)
    assert trainer._metrics["eval"]["caption_reasoner/zero_variance_groups"][-1] == 0.0
