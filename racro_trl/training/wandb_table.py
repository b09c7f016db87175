"""A sampled table of what the reward saw, logged to Weights & Biases every N steps.

Columns: step, image, question, caption, reasoner answer (extracted), gold, score. TRL's own
completions table (``log_completions``) cannot hold the conversational multimodal prompts of CRO
in a wandb Table, so CRO recipes log this one instead.
"""

from __future__ import annotations

import random

from transformers import TrainerCallback

COLUMNS = ["step", "image", "question", "caption", "reasoner_answer", "gold", "score"]


class CaptionTableCallback(TrainerCallback):
    """Every ``every_steps`` optimizer steps, log ``rows`` random captions of the last reward call."""

    def __init__(self, reward, every_steps: int = 10, rows: int = 8, seed: int = 0):
        self.every_steps, self.rows = every_steps, rows
        self.rng = random.Random(seed)
        self.batch: list[dict] = []  # the last reward call's records (CaptionReward.batch_hooks)
        reward.batch_hooks.append(self.keep)

    def keep(self, batch: list[dict]) -> None:
        self.batch = batch

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or state.global_step % self.every_steps or not self.batch:
            return
        import wandb

        if wandb.run is None:
            return
        batch = self.batch
        sample = self.rng.sample(batch, min(self.rows, len(batch)))
        table = wandb.Table(columns=COLUMNS)
        for r in sample:
            image = wandb.Image(r["image"]) if r["image"] is not None else None
            table.add_data(
                r["step"],
                image,
                r["question"],
                r["caption"],
                str((r["extracted"] or [None])[0]),
                r["gold"],
                r["reward"],
            )
        wandb.log({"caption_table": table}, commit=False)
