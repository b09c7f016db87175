"""One CRO step on one GPU at real shapes: where the time and the memory go.

    python bench/cro_step.py --mode lora                                   # LoRA policy
    accelerate launch --config_file configs/accelerate/zero3_offload.yaml --num_processes 1 \
        bench/cro_step.py --mode full                                      # full fine-tune, ZeRO-3 + CPU offload
    python bench/cro_step.py --tiny                                        # CPU smoke run of the script
    python bench/cro_step.py --mode lora --sleep                           # both vLLM engines asleep in backward
    python bench/cro_step.py --mode lora --trainer trl                     # TRL's GRPOTrainer as it is
    python bench/cro_step.py --mode lora --informative-groups 4 --drop-zero-variance   # 12 of 16 groups dropped
    python bench/cro_step.py --mode lora --standalone --profile-step 3     # vLLM ratios, kernel profile

`--trainer cro` (default) runs racro-trl's CROTrainer, `trl` TRL's plain GRPOTrainer: without the
handoff seam (trl#6294), colocated vLLM samples from a prompt with every image expanded twice. TRL's
`sampling/sampling_logp_difference/*` and `sampling/importance_sampling_ratio/*` show it (LOG lines).

Qwen2.5-VL-3B-shape policy (random bf16 weights) sampling captions with TRL's colocated vLLM, and a
DeepSeek-R1-Distill-Qwen-7B-shape reasoner (vLLM, dummy weights) in the same process scoring them:
16 prompts x 4 captions per optimizer step. Prints per step: policy generation, reward (reasoner),
the rest of scoring (log-probs), backward + optimizer, and peak GPU memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from phase_probes import KernelProfile, Standalone, timed  # noqa: E402


class PassFlops:
    """The policy's FLOPs per step, counted from what each log-prob pass is given: 2 x parameters per
    token (non-padding tokens through the language model, image patches through the vision tower).
    Passes without gradient are the old and reference log-probs; a pass with gradient costs a forward
    and a backward of twice a forward (once with LoRA: the frozen weights get no gradient), plus a
    recomputed forward under gradient checkpointing."""

    def __init__(self, model, checkpointing: bool, lora: bool = False):
        from racro_trl.training.model_setup import full_numel

        self.vision = sum(full_numel(p) for n, p in model.named_parameters() if "visual" in n)
        self.language = sum(full_numel(p) for n, p in model.named_parameters() if "visual" not in n)
        self.backward_factor = 1 + (1 if checkpointing else 0) + (1 if lora else 2)
        self.reset()

    def reset(self) -> None:
        self.scoring = self.training = 0.0

    def wrap(self, method):
        import torch

        def counted(model, input_ids, attention_mask, *args, **kwargs):
            pixels = kwargs.get("pixel_values")
            patches = 0 if pixels is None else pixels.shape[0]
            forward = 2 * self.language * int(attention_mask.sum()) + 2 * self.vision * patches
            if torch.is_grad_enabled():
                self.training += self.backward_factor * forward
            else:
                self.scoring += forward
            return method(model, input_ids, attention_mask, *args, **kwargs)

        return counted


def informative(calculate, groups: int, captions: int):
    """``_calculate_rewards`` with the first ``groups`` groups of each batch given rewards 0, 1, 0, 1, ...
    (the reasoner still scores every caption: its time is unchanged)."""

    import torch

    def wrapper(*args, **kwargs):
        rewards = calculate(*args, **kwargs)
        rows = min(groups * captions, rewards.shape[0])
        rewards[:rows, 0] = (torch.arange(rows, device=rewards.device) % 2).to(rewards.dtype)
        return rewards

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["lora", "full"], default="lora")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--policy", choices=["3b", "7b"], default="3b", help="Qwen2.5-VL shape of the policy")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--captions", type=int, default=4)
    parser.add_argument("--caption-tokens", type=int, default=512)
    parser.add_argument("--reasoner-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--policy-vllm-memory", type=float, default=0.2)
    parser.add_argument("--reasoner-memory", type=float, default=0.3)
    parser.add_argument("--trainer", choices=["cro", "trl"], default="cro")
    parser.add_argument("--per-device", type=int, default=16, help="captions per forward/backward pass")
    parser.add_argument(
        "--sleep",
        action="store_true",
        help="the reasoner's engine sleeps between reward calls (reasoner_sleep)",
    )
    parser.add_argument(
        "--policy-sleep",
        action="store_true",
        help="TRL's policy engine sleeps between uses (vllm_enable_sleep_mode)",
    )
    parser.add_argument(
        "--no-gradient-checkpointing",
        action="store_true",
        help="keep activations (more memory, no recompute)",
    )
    parser.add_argument(
        "--drop-zero-variance",
        action="store_true",
        help="drop_zero_variance_groups (with dummy weights every caption scores 0: all groups are dropped)",
    )
    parser.add_argument(
        "--informative-groups",
        type=int,
        default=0,
        help="make this many prompts' groups per step informative: their captions' rewards set to 0, 1, "
        "0, 1, ... after the reasoner has scored them (dummy weights score every caption 0), so that "
        "--drop-zero-variance has that many groups to keep",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="the GPU's dense bf16 peak, for the efficiency columns (default: %(default)s, H100/H200 SXM)",
    )
    parser.add_argument(
        "--full-vocab",
        action="store_true",
        help="sample captions from the whole vocabulary (not printable tokens only): with a restricted "
        "vocabulary vLLM's log-probs are renormalised over it and TRL's logp gap measures that, not the prompt",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="after training, run the last step's batches straight through each vLLM engine: sampling and "
        "reward tokens/s as a ratio to standalone vLLM on the same model, shape and batch (GPU only)",
    )
    parser.add_argument(
        "--profile-step",
        type=int,
        default=0,
        help="torch.profiler over this step's backward + optimizer: GPU-busy share and kernel time by kind (GPU only)",
    )
    parser.add_argument(
        "--json", help="also write the measured figures to this file (bench/efficiency.py reads it)"
    )
    args = parser.parse_args()

    import torch
    from peft import LoraConfig
    from transformers import AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from racro_trl.data.training_data import sample_rows, to_training_format
    from racro_trl.reasoning.reasoners import Sampling, build_reasoner
    from racro_trl.training.model_setup import full_numel
    from racro_trl.training.rewards import CaptionReward

    tmp = Path(os.environ.get("BENCH_TMP") or tempfile.mkdtemp())
    cuda = torch.cuda.is_available()
    if args.tiny:
        from racro_trl.toy.tiny import build_tiny_models

        paths = build_tiny_models(tmp / "tiny")
        policy, reasoner_path = paths["policy"], paths["reasoner"]
        engine = {"max_model_len": 1024, "enforce_eager": True}
        args.prompts, args.caption_tokens, args.reasoner_tokens, args.steps = 4, 8, 8, 2
        image_size = 96
    else:
        from racro_trl.toy import shapes
        from racro_trl.toy.shapes import policy_dir, printable_token_ids, reasoner_dir

        policy = tmp / f"qwen2.5-vl-{args.policy}"
        if not (policy / "config.json").exists():
            size = args.policy.upper()
            policy_dir(
                policy, getattr(shapes, f"QWEN25_VL_{size}_TEXT"), getattr(shapes, f"QWEN25_VL_{size}_VISION")
            )
            torch.cuda.reset_peak_memory_stats()  # the peak-memory figures exclude building it
        reasoner_path = reasoner_dir(tmp / "r1-distill-qwen-7b")
        # Reward prompt: ~250 tokens of template and question + the caption; then the answer.
        # A filler token of the full vocabulary decodes to ~13 reasoner tokens (printable_token_ids).
        max_len = args.caption_tokens * (16 if args.full_vocab else 1) + args.reasoner_tokens + 512
        engine = {"load_format": "dummy", "max_model_len": max_len, "dtype": "bfloat16"}
        image_size = 448
    processor = AutoProcessor.from_pretrained(policy)
    # Dummy shapes: captions of letters and punctuation only, and no end token, so every caption is
    # exactly --caption-tokens long and reaches the reasoner as that many tokens (printable_token_ids).
    generation_kwargs = (
        None
        if args.tiny or args.full_vocab
        else {"allowed_token_ids": printable_token_ids(processor.tokenizer)}
    )

    import datasets

    rows = sample_rows(args.prompts * args.steps, seed=0, size=image_size)
    dataset = to_training_format(datasets.Dataset.from_list(rows))
    completions = args.prompts * args.captions
    per_device = min(completions, args.per_device)
    config = GRPOConfig(
        output_dir=str(tmp / "out"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=completions // per_device,
        num_generations=args.captions,
        max_completion_length=args.caption_tokens,
        max_steps=args.steps,
        learning_rate=1e-6 if args.mode == "full" else 1e-5,
        beta=0.001,
        epsilon=0.2,
        loss_type="dapo",
        bf16=cuda,
        gradient_checkpointing=not (args.tiny or args.no_gradient_checkpointing),
        use_vllm=cuda,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=args.policy_vllm_memory,
        # The prompt (a 448-px image: 256 visual tokens, and the text) and the caption; left unset, the
        # engine takes the model's 128k positions, whose one-request KV cache the 7B shape cannot hold
        # at 0.25 of an 80 GB card.
        vllm_max_model_length=args.caption_tokens + 2048,
        vllm_enable_sleep_mode=args.policy_sleep,
        generation_kwargs=generation_kwargs,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        model_init_kwargs={"dtype": "bfloat16" if cuda else "float32", "attn_implementation": "sdpa"},
    )

    def factory():
        return build_reasoner(
            "vllm",
            str(reasoner_path),
            gpu_memory_utilization=args.reasoner_memory,
            seed=0,
            sleep=args.sleep,
            **engine,
        )

    reward = CaptionReward(
        factory, sampling=Sampling(temperature=1.0, top_p=1.0, max_tokens=args.reasoner_tokens)
    )
    peft_config = None
    if args.mode == "lora":
        peft_config = LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
            task_type="CAUSAL_LM",
        )
    extra = {}
    if args.trainer == "cro":
        from trl import ModelConfig

        from racro_trl.training.configs import CROScriptArguments
        from racro_trl.training.trainer import CROTrainer as Trainer

        script_args = CROScriptArguments(reward_funcs=[], drop_zero_variance_groups=args.drop_zero_variance)
        extra = {"script_args": script_args, "model_args": ModelConfig()}
    else:
        Trainer = GRPOTrainer
    trainer = Trainer(
        model=str(policy),
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        **extra,
    )
    times: dict[str, list[float]] = defaultdict(list)
    trainer._generate = timed(times, "generate", trainer._generate)
    if args.informative_groups:
        trainer._calculate_rewards = informative(
            trainer._calculate_rewards, args.informative_groups, args.captions
        )
    trainer._calculate_rewards = timed(times, "reward", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed(times, "score", trainer._generate_and_score_completions)
    standalone = Standalone(trainer, reward, times) if args.standalone and cuda else None
    profile = KernelProfile(trainer, args.profile_step) if args.profile_step and cuda else None
    flops = PassFlops(trainer.model, config.gradient_checkpointing, lora=args.mode == "lora")
    trainer._get_per_token_logps_and_entropies = flops.wrap(trainer._get_per_token_logps_and_entropies)
    header = (
        f"{'step':>4} {'total_s':>8} {'policy_gen_s':>12} {'reward_s':>9} {'logps_s':>8} {'bwd+opt_s':>9} "
        f"{'peak_torch_GiB':>14} {'device_used_GiB':>15} {'logps_TFLOP/s':>13} {'bwd+opt_TFLOP/s':>15}"
    )
    rows, records = [], []

    class StepClock(TrainerCallback):
        """Prints each step's row as soon as it ends: a run cut short still reports its steps."""

        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()
            flops.reset()

        def on_step_end(self, *a, **k):
            torch_peak = used = 0.0
            if cuda:
                torch.cuda.synchronize()
                free, total = torch.cuda.mem_get_info()
                torch_peak, used = torch.cuda.max_memory_allocated() / 2**30, (total - free) / 2**30
            step = time.perf_counter() - self.start
            if profile is not None:
                profile.stop()
            gen, rew, score = times["generate"][-1], times["reward"][-1], times["score"][-1]
            logps, train = score - gen - rew, step - score

            def rate(count, seconds):  # TFLOP/s and its share of --peak-tflops
                tflops = count / max(seconds, 1e-9) / 1e12
                return f"{tflops:.1f} ({100 * tflops / args.peak_tflops:.0f}%)"

            records.append(
                {
                    "total_s": step, "sampling_s": gen, "reward_s": rew, "logps_s": logps, "train_s": train,
                    "peak_torch_gib": torch_peak, "device_used_gib": used,
                    "logps_tflops": flops.scoring / max(logps, 1e-9) / 1e12,
                    "train_tflops": flops.training / max(train, 1e-9) / 1e12,
                    "sync_s": times["sync"][-1] if times["sync"] else None,
                    "profiled": profile is not None and len(records) + 1 == args.profile_step,
                }
            )  # fmt: skip
            rows.append(
                f"{len(rows) + 1:>4} {step:>8.1f} {gen:>12.1f} {rew:>9.1f} {logps:>8.1f} "
                f"{train:>9.1f} {torch_peak:>14.1f} {used:>15.1f} {rate(flops.scoring, logps):>13} "
                f"{rate(flops.training, train):>15}"
            )
            print(f"\nSTEP {header}\nSTEP {rows[-1]}", flush=True)

    trainer.add_callback(StepClock())
    trainer.train()
    trainable = sum(full_numel(p) for p in trainer.model.parameters() if p.requires_grad)
    print(f"\nCRO step bench ({args.policy} policy, {args.mode}, {args.trainer} trainer, sleep {'on' if args.sleep else 'off'}, "
          f"gradient checkpointing {'off' if args.no_gradient_checkpointing else 'on'}, "
          f"{per_device} captions per pass); device {torch.cuda.get_device_name() if cuda else 'CPU'}; "
          f"{args.prompts} prompts x {args.captions} captions, captions <= {args.caption_tokens} tokens, "
          f"reasoner answers <= {args.reasoner_tokens} tokens; trainable parameters {trainable / 1e6:.1f}M; "
          f"TFLOP/s from 2 x parameters per token ({flops.language / 1e9:.2f}B language, {flops.vision / 1e9:.2f}B "
          f"vision per patch), % of {args.peak_tflops:.0f} TFLOP/s")  # fmt: skip
    print("\n".join([header, *rows]))
    if profile is not None:
        print(f"(step {args.profile_step} ran under the profiler: its times include the profiler's cost)")
        print("\n".join(profile.lines))
    if standalone is not None:
        print("\n".join(standalone.report()))
    if args.json:
        import json

        result = {
            "args": vars(args),
            "device": torch.cuda.get_device_name() if cuda else "CPU",
            "steps": records,
            "vs_standalone": standalone.ratios if standalone is not None else {},
            "profile": profile.lines if profile is not None else [],
            "peak_tflops": args.peak_tflops,
        }
        Path(args.json).write_text(json.dumps(result, indent=1))
    for h in trainer.state.log_history:
        if "loss" in h:
            print(
                "LOG",
                {
                    k: h[k]
                    for k in (
                        "step",
                        "loss",
                        "grad_norm",
                        "reward",
                        "completions/mean_length",
                        "dropped_rows",
                    )
                    + tuple(k for k in h if k.startswith("sampling/") or k.endswith("zero_variance_groups"))
                    if k in h
                },
            )


if __name__ == "__main__":
    main()
