"""``CROTrainer``: TRL's ``GRPOTrainer`` as CRO runs it.

What it adds: the model card of the run, a resume that really restores the weights, where a step's
time goes, the reasoner's requests overlapped with the log-prob pass, and the one seam where
racro-trl works around TRL bugs (below, with the upstream issues it can be deleted for).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from trl import GRPOTrainer

from .card import model_card
from .groups import EXACT_LOSS_TYPES, informative_rows, keep_rows, zero_variance_share
from .prefetch import SendsAhead
from .sampled_prompt import (
    align_image,
    checkpoint_keeps,
    one_placeholder_per_image,
    pixel_bounds,
    prompt_mismatch,
    vision_token_ids,
)

logger = logging.getLogger(__name__)


class Generated(NamedTuple):
    """What TRL 1.16's ``GRPOTrainer._generate`` returns, by name (its tuple, in its order)."""

    prompt_ids: list
    completion_ids: list
    tool_mask: list | None
    completions: list
    sampling_logps: list | None
    extra_fields: dict
    images: list | None
    tool_images: list | None


@dataclass
class BatchInFlight:
    """The generation batch being scored: its inputs (for the requests sent ahead) and when its
    sampling ended (for ``time/logprob_s``)."""

    inputs: list[dict]
    sampled_at: float | None = None


class CROTrainer(GRPOTrainer):
    """GRPOTrainer with a model card of the CRO run, a resume that really restores the weights, the
    sampled prompt held equal to the trained prompt, and where a step's time goes:
    ``time/generation_s`` (caption sampling), ``time/logprob_s`` (sampling's end to the reward call: the
    old and reference log-probs) and ``time/reward_s`` (the reasoner and grading, with the gather of all
    ranks' rewards; with the overlap, only the wait for answers still running) are logged beside TRL's
    ``step_time``."""

    def __init__(self, *args, script_args, model_args, recipe_text: str | None = None, **kwargs):
        vision_tokens = vision_token_ids(kwargs["processing_class"])
        suppress_vision_tokens(kwargs["args"], vision_tokens)  # before TRL builds its sampler
        super().__init__(*args, **kwargs)
        self._in_flight: BatchInFlight | None = None  # the generation batch being scored
        self.cro_args = (script_args, model_args, recipe_text)
        self.drop_zero_variance = getattr(script_args, "drop_zero_variance_groups", False)
        if self.drop_zero_variance:
            self._check_drop_is_exact()
        self.pixel_bounds = pixel_bounds(self.processing_class.image_processor)
        if self.use_vllm:
            self._check_vllm_keeps_aligned_images()
            self.vllm_generation.generate = self._sample_the_trained_prompt(self.vllm_generation.generate)
            self.vllm_generation.sync_weights = self._forget_stale_image_features(
                self.vllm_generation.sync_weights
            )

    # ---- The seam: TRL 1.16 workarounds ---------------------------------------------------------------
    # (1) huggingface/trl#6294 (fix PR #6718, unreleased): in colocate mode TRL hands vLLM the
    #     processor-EXPANDED prompt ids plus the raw images, and vLLM expands the first placeholder of
    #     each image again, so captions are sampled from another prompt than the one trained on.
    #     `_sample_the_trained_prompt` sends one placeholder per image and checks, every call, that the
    #     prompt vLLM reports is the trainer's. Delete it when TRL sends unexpanded ids itself.
    # (2) huggingface/trl#6401: TRL builds its vLLM engine (and `trl vllm-serve` its processor) from the
    #     checkpoint's processor config, not from the trainer's processor, so with the recipe's pixel
    #     bounds the two cut different patch grids. `_generate_and_score_completions` resizes every image
    #     onto the trainer's grid first, which both processors then keep as it is.
    # (3) TRL's transformers sampler suppresses only `<|image_pad|>` and its vLLM sampler nothing: a
    #     sampled vision token breaks the training forward ("Image features and image tokens do not
    #     match"). `suppress_vision_tokens` bans all of them on every backend.
    # (4) huggingface/trl#7198 (fix PR #7200, unreleased): after pushing new weights TRL resets vLLM's
    #     prefix cache but not its encoder cache, so an image seen before is sampled from with vision
    #     features of older weights (measured on an H100: TRL's logp gap 0.001 -> 0.15 by step 12 of
    #     the colour task). `_forget_stale_image_features` resets it after every weight push.

    def _generate_and_score_completions(self, inputs):
        factor, low, high = self.pixel_bounds
        inputs = [
            {**x, "images": [align_image(image, factor, low, high) for image in x["images"]]}
            if x.get("images")
            else x
            for x in inputs
        ]
        self._in_flight = BatchInFlight(inputs)
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._in_flight = None
        mode = "train" if self.model.training else "eval"
        self._log_zero_variance_groups(mode, len(inputs) * self.accelerator.num_processes)
        return self._drop_zero_variance(output) if self.drop_zero_variance and mode == "train" else output

    # ---- Groups that teach nothing (racro_trl/training/groups.py) ---------------------------------------------

    def _log_zero_variance_groups(self, mode: str, batch_size: int) -> None:
        """``<reward>/zero_variance_groups``: per reward function, the share of this generation batch's
        groups (all ranks: the last ``batch_size`` of TRL's gathered rewards, a log that train and eval
        batches share) whose captions all scored the same."""
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        for name, rewards in self._logs["rewards"].items():
            share = zero_variance_share(list(rewards)[-batch_size:], group_size)
            if share is not None:
                self._metrics[mode][f"{name}/zero_variance_groups"].append(share)

    def _drop_zero_variance(self, output: dict) -> dict:
        """The generation batch without its rows of advantage 0 (``drop_zero_variance_groups``); logs
        ``dropped_rows``, the share left out."""
        rows = informative_rows(output["advantages"], self.args.steps_per_generation)
        self._metrics["train"]["dropped_rows"].append(1 - len(rows) / len(output["advantages"]))
        return keep_rows(output, rows)

    def _check_drop_is_exact(self) -> None:
        """drop_zero_variance_groups only where dropping rows of advantage 0 keeps the gradient."""
        args = self.args
        problems = []
        if self.loss_type not in EXACT_LOSS_TYPES:
            problems.append(f"loss_type {self.loss_type!r} averages over the rows it is given")
        if args.top_entropy_quantile < 1.0 or self._entropy_bonus_enabled:
            problems.append("the entropy mask and bonus are computed over the rows given")
        if problems:
            raise ValueError(
                "drop_zero_variance_groups would change the gradient here: "
                + "; ".join(problems)
                + f" (it is exact for loss_type {', '.join(EXACT_LOSS_TYPES)}; racro_trl/training/groups.py)"
            )

    def _check_vllm_keeps_aligned_images(self) -> None:
        """vLLM resizes with the checkpoint's bounds: they must keep every image the trainer aligned."""
        from transformers import AutoImageProcessor

        name = self.model.name_or_path
        checkpoint = pixel_bounds(
            AutoImageProcessor.from_pretrained(name, trust_remote_code=self.args.trust_remote_code)
        )
        if not checkpoint_keeps(self.pixel_bounds, checkpoint):
            raise ValueError(
                f"image pixel bounds {self.pixel_bounds[1:]} (image_min_pixels, image_max_pixels) are not inside "
                f"{checkpoint[1:]}, the bounds of {name}'s processor config, with which vLLM resizes images: "
                "captions would be sampled from another patch grid than the one trained on. Keep the recipe's "
                "bounds inside the checkpoint's, or save the checkpoint's processor with the recipe's bounds"
            )

    def _sample_the_trained_prompt(self, generate):
        """``VLLMGeneration.generate`` sending one placeholder per image, and checking in colocate mode
        that vLLM sampled from exactly the trainer's prompt ids. Server mode places the server's image
        features on the trainer's own runs of image tokens (TRL's ``_place_features``): no change there."""
        image_token_id = self.processing_class.image_token_id
        colocate = self.vllm_mode == "colocate"

        def sample(prompts, images, num_generations, profiler=None):
            sent = one_placeholder_per_image(prompts, image_token_id) if colocate and images else prompts
            out = generate(prompts=sent, images=images, num_generations=num_generations, profiler=profiler)
            problem = prompt_mismatch(prompts, out[0], image_token_id) if colocate else None
            if problem:
                raise RuntimeError(
                    f"vLLM sampled from another prompt than the one trained on ({problem}); most often the two "
                    "processors resized an image differently: check image_min_pixels/image_max_pixels against the "
                    "checkpoint's processor config"
                )
            return out

        return sample

    def _forget_stale_image_features(self, sync_weights):
        """``VLLMGeneration.sync_weights`` followed by a reset of vLLM's encoder cache (trl#7198)."""
        generation = self.vllm_generation

        def sync():
            sync_weights()
            if self.vllm_mode == "colocate":
                generation.llm.llm_engine.reset_encoder_cache()
            elif self.accelerator.is_main_process:
                client = generation.vllm_client
                response = client.session.post(f"{client.base_url}/reset_encoder_cache")
                if response.status_code != 200:
                    raise RuntimeError(
                        f"the policy's vLLM server at {client.base_url} did not reset its encoder cache "
                        f"({response.status_code}: {response.text[:200]}); start it with `trl vllm-serve` "
                        "(its dev endpoints are on)"
                    )

        return sync

    # ---- The overlap seam: reasoner requests sent while the policy computes its log-probs -------------
    # TRL 1.16's `_generate_and_score_completions` samples (`_generate`), then computes the old and
    # reference log-probs, then calls the rewards (`_calculate_rewards`). A served reasoner would idle
    # through that log-prob pass and the training GPUs through the reward: `_generate` hands the decoded
    # captions to every reward that `SendsAhead` with `overlap` on (`CaptionReward.send`, which starts
    # its requests in a thread; racro_trl/training/prefetch.py), and the reward call collects the
    # answers. Nothing of TRL's is replaced; with `reasoner_overlap: false` this is TRL's order exactly.

    def _generate(self, prompts):
        returned = self._timed("generation", super()._generate, prompts)
        if len(returned) != len(Generated._fields):
            raise RuntimeError(
                f"TRL's GRPOTrainer._generate returned {len(returned)} values; CROTrainer reads the 8 of TRL 1.16 "
                f"({', '.join(Generated._fields)}): update racro_trl.training.trainer.Generated for this TRL"
            )
        generated = Generated(*returned)
        batch = self._in_flight
        if batch is not None:
            self._send_reasoner_requests(batch.inputs, generated.completions)
            batch.sampled_at = time.perf_counter()
        return generated

    def _send_reasoner_requests(self, inputs: list[dict], completions: list) -> None:
        if any("question" not in x for x in inputs):
            return  # the reward call asks itself (and names what is missing)
        for reward in self.reward_funcs:
            if isinstance(reward, SendsAhead) and reward.overlap:
                reward.send(completions, [x["question"] for x in inputs], trainer_state=self.state)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        batch = self._in_flight
        sampled_at = batch.sampled_at if batch is not None else None
        if sampled_at is not None:  # between sampling and reward: TRL's old and reference log-prob pass
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["time/logprob_s"].append(time.perf_counter() - sampled_at)
        return self._timed(
            "reward", super()._calculate_rewards, inputs, prompts, completions, completion_ids_list
        )

    # ---- Timing, resume, model card ------------------------------------------------------------------

    def _timed(self, name: str, method, *args):
        start = time.perf_counter()
        result = method(*args)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][f"time/{name}_s"].append(time.perf_counter() - start)
        return result

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume the policy's weights with the checkpoint's key names converted.

        transformers saves Qwen2.5-VL under the original checkpoint's key names
        (``model.layers...``), while the loaded model names them ``model.language_model.layers...``:
        Trainer's non-strict ``load_state_dict`` then matches none of them and the resumed run
        silently goes on from the initial weights. ``from_pretrained`` converts the names.
        """
        model = model if model is not None else self.model
        has_weights = any(Path(resume_from_checkpoint).glob("model*.safetensors"))
        if (
            self.is_deepspeed_enabled
            or self.is_fsdp_enabled
            or not has_weights
            or hasattr(model, "peft_config")
        ):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        reloaded = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(reloaded.state_dict(), strict=True)
        logger.info("policy weights resumed from %s", resume_from_checkpoint)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None) -> None:
        if not self.is_world_process_zero():
            return
        script_args, model_args, recipe_text = self.cro_args
        card = model_card(script_args, self.args, model_args, self.state.log_history, recipe_text)
        Path(self.args.output_dir, "README.md").write_text(card)


def suppress_vision_tokens(args, tokens: dict[str, int]) -> None:
    """Ban ``tokens`` from the policy's samples through ``args.generation_kwargs``, which TRL hands to
    its sampler: vLLM's ``bad_words`` (colocate and server; plain strings survive the server's JSON),
    transformers' ``suppress_tokens``. A user's own entries are kept."""
    kwargs = dict(args.generation_kwargs or {})
    if args.use_vllm:
        kwargs["bad_words"] = sorted(set(kwargs.get("bad_words") or []) | set(tokens))
    else:
        kwargs["suppress_tokens"] = sorted(set(kwargs.get("suppress_tokens") or []) | set(tokens.values()))
    args.generation_kwargs = kwargs
