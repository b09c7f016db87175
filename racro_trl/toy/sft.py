"""A short supervised fine-tuning run on CPU: how the tiny models of the colour task and of mini-RACRO are
warm-started (TRL's ``SFTTrainer``, loss on the completion only)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def sft(
    model, processing_class, dataset, out: Path, seed: int, steps: int, lr: float, batch: int, schedule: str,
    until: Callable | None = None, every: int = 100,
) -> int:  # fmt: skip
    """A short ``SFTTrainer`` run on CPU, loss on the completion only; saves model and processor to ``out``
    and returns the steps it ran. ``until``: called with the model every ``every`` steps; the run stops
    early once it returns True (``steps`` is then the most it runs; the schedule is laid over ``steps``).

    The reader's learning rate decays to 0 (``linear``): at a constant 2e-3 its last steps spiked (grad
    norm 10-30) and the saved model had unlearned its end-of-turn token. The captioner's stays
    ``constant``: decayed, it learned the colours of the question prompt less (72% against 97%).
    Gradient checkpointing (on in TRL's SFTConfig by default) is off: recomputing these tiny models'
    forward passes took 16 of `racro make-tiny`'s 122 s on 2 cores, and the models come out the same.
    """
    import tempfile

    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
            lr_scheduler_type=schedule, warmup_steps=0, weight_decay=0.0, logging_steps=max(1, steps // 5),
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=seed, data_seed=seed,
            max_length=None, disable_tqdm=True, gradient_checkpointing=False,
        )  # fmt: skip
        callbacks = [stop_when(until, every)] if until else None
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        trainer.train()
    ran = trainer.state.global_step
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    logger.info("SFT of %s: loss %.3f -> %.3f over %d steps", out.name, losses[0], losses[-1], ran)
    trainer.model.save_pretrained(out)
    processing_class.save_pretrained(out)
    return ran


def stop_when(until: Callable, every: int):
    """A ``TrainerCallback`` that stops training at the first multiple of ``every`` steps where
    ``until(model)`` is True (the model is put back in training mode after the call).

    Not transformers' ``EarlyStoppingCallback``: that one stops when an evaluation metric has stopped
    improving for some evaluations (and needs an eval dataset and metric); this stops once a check
    passes a threshold."""
    from transformers import TrainerCallback

    class StopWhen(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 and state.global_step < state.max_steps:
                if until(model):
                    control.should_training_stop = True
                model.train()
            return control

    return StopWhen()
