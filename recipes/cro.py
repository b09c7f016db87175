"""Caption Reward Optimization (CRO): GRPO on a Qwen2.5-VL captioner, rewarded by a frozen text reasoner.

    accelerate launch --config_file configs/accelerate/single.yaml recipes/cro.py --config recipes/tiny/cro.yaml

Every key of the YAML is a field of CROScriptArguments (racro_trl/training/configs.py), trl.GRPOConfig or
trl.ModelConfig, and can be overridden on the command line (`--learning_rate 5e-7`).
"""

# ruff: noqa: E402 (the stack-printing signal handler goes in before the heavy imports)
import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path

# A run that seems stuck: `kill -USR1 <pid of a rank>` prints that rank's Python stacks to stderr, from
# here on (the imports below take a rank's first ~15 s).
faulthandler.register(signal.SIGUSR1, all_threads=True)

import datasets
import transformers
from accelerate import PartialState
from transformers import AutoProcessor, set_seed
from trl import GRPOConfig, ModelConfig, get_peft_config

from racro_trl.compat import skip_deepspeed_shm_op
from racro_trl.data.training_data import (
    constant_images,
    filter_dataset,
    load_dataset_any,
    set_image_pixels,
    to_training_format,
)
from racro_trl.reporting.run_summary import audit_summary, reward_table
from racro_trl.training.card import check_hub_push
from racro_trl.training.configs import (
    CROScriptArguments,
    check_references,
    keep_vllm_out,
    make_parser,
    validate_run,
)
from racro_trl.training.launch_checks import check_file
from racro_trl.training.model_setup import (
    attention_implementation,
    default_lora_targets,
    freeze_vision_tower,
    partitioning,
    resume_checkpoint,
)
from racro_trl.training.rewards import CaptionReward, get_reward_funcs
from racro_trl.training.wandb_table import CaptionTableCallback

logger = logging.getLogger(__name__)


def recipe_text(argv: list[str]) -> str | None:
    """The YAML this run was started with, plus its command-line overrides, for the model card."""
    if "--config" not in argv:
        return None
    i = argv.index("--config")
    overrides = " ".join(argv[1:i] + argv[i + 2 :])
    text = Path(argv[i + 1]).read_text()
    return text + (f"\n# command-line overrides: {overrides}\n" if overrides else "")


def main(script_args: CROScriptArguments, training_args: GRPOConfig, model_args: ModelConfig):
    # ---- Seed, logging, launch checks --------------------------------------------------------------
    set_seed(training_args.seed)
    state = PartialState()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
        stream=sys.stdout,
    )
    for lib in (datasets, transformers):
        lib.utils.logging.set_verbosity(training_args.get_process_log_level())
    validate_run(script_args, training_args, state.num_processes)
    check_hub_push(training_args)
    from racro_trl.training.trainer import (
        CROTrainer,  # after keep_vllm_out: TRL's trainer imports vLLM if it can
    )

    if sys.modules.get("vllm", False) is None:
        logger.info("this run uses no vLLM: it was not imported")
    logger.info("script %s\nmodel %s", script_args, model_args)

    # ---- Data ---------------------------------------------------------------------------------------
    dataset = load_dataset_any(
        script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split
    )
    dataset = to_training_format(dataset, script_args.prompt_format, script_args.dataset_num_proc)
    dataset = filter_dataset(
        dataset,
        script_args.dataset_sources,
        script_args.dataset_categories,
        script_args.pass_rate_column,
        script_args.min_pass_rate,
        script_args.max_pass_rate,
    )
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    if script_args.image_ablation == "constant":
        dataset = constant_images(dataset, script_args.dataset_num_proc)

    # ---- Processor and model (GRPOTrainer loads the model itself, under zero.Init with ZeRO-3) -------
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    set_image_pixels(processor, script_args.image_min_pixels, script_args.image_max_pixels)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": attention_implementation(model_args.attn_implementation),
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    # ---- Rewards (the reasoner is built lazily, at the first reward call) ---------------------------
    reward_funcs = get_reward_funcs(script_args.reward_funcs, script_args, training_args.output_dir)

    # ---- Trainer --------------------------------------------------------------------------------------
    default_lora_targets(model_args)
    trainer = CROTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
        script_args=script_args,
        model_args=model_args,
        recipe_text=recipe_text(sys.argv),
    )

    caption_reward = next((f for f in reward_funcs if isinstance(f, CaptionReward)), None)
    if "wandb" in (training_args.report_to or []) and caption_reward and script_args.caption_table_steps:
        trainer.add_callback(CaptionTableCallback(caption_reward, script_args.caption_table_steps))
    if script_args.freeze_vision_tower:
        freeze_vision_tower(trainer.model)
    logger.warning("%s (rank %d)", partitioning(trainer.model), state.process_index)

    # ---- Train, resuming from the last checkpoint in output_dir -------------------------------------
    checkpoint = resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    # ---- Save -------------------------------------------------------------------------------------------
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card()
        print(f"\nReward per step:\n{reward_table(trainer.state.log_history)}")
        audit_dir = os.path.join(training_args.output_dir, "audit")
        if os.path.isdir(audit_dir):
            print(audit_summary(audit_dir))
        print(f"model saved to {training_args.output_dir}")

    # ---- Push ---------------------------------------------------------------------------------------------
    if training_args.push_to_hub:
        trainer.push_to_hub()

    for func in reward_funcs:
        if hasattr(func, "close"):
            func.close()


def parse_and_check() -> tuple[CROScriptArguments, GRPOConfig, ModelConfig]:
    """The run's arguments, checked before anything loads: a wrong path or value exits with one line
    naming the argument (each rank would otherwise print a traceback after loading the policy)."""
    try:
        # `accelerate launch` passes its config's deepspeed_config_file here; GRPOConfig reads it
        check_file(
            os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"), "deepspeed_config_file (accelerate config)"
        )
        if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":  # set by `accelerate launch` for DeepSpeed
            skip_deepspeed_shm_op()  # before the parser: GRPOConfig may set up distributed
        args = make_parser().parse_args_and_config()
        check_references(args[0], args[2])
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("RANK", "0") == "0":
            print(f"recipes/cro.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    return args


if __name__ == "__main__":
    args = parse_and_check()
    keep_vllm_out(*args[:2])  # before main imports the trainer
    main(*args)
