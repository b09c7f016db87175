"""Script arguments of the CRO recipe, parsed by TRL's ``TrlParser`` together with ``GRPOConfig``
and ``ModelConfig`` from one YAML file (any key can be overridden on the command line).

Invalid combinations fail here, before any model loads, with the fix in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from ..data.training_data import PROMPT_FORMATS
from ..reasoning.reasoners import BACKENDS


@dataclass
class CROScriptArguments(trl.ScriptArguments):
    """Data, reward and reasoner settings of a CRO run (what GRPOConfig and ModelConfig lack)."""

    # Data
    prompt_format: str = field(
        default="caption",
        metadata={"help": "Prompt the policy answers: 'caption' (CRO) or 'qa_cot' (the CRO-GRPO stage)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (debugging, tiny runs)."}
    )
    image_min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Smallest image area fed to the policy (the original: 512*512 = 262144); None: the processor's."
        },
    )
    image_max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Largest image area fed to the policy (the original: 2048*2048 = 4194304); None: the processor's."
        },
    )
    image_ablation: str | None = field(
        default=None,
        metadata={"help": "Control run: 'constant' gives the policy one grey image in place of every image, so its "
                  "captions cannot depend on the image and the reward should stay at chance."},
    )  # fmt: skip
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for dataset preprocessing."}
    )
    dataset_sources: list[str] | None = field(
        default=None, metadata={"help": "Train only on rows of these sources (ViRL39K `source`)."}
    )
    dataset_categories: list[str] | None = field(
        default=None, metadata={"help": "Train only on rows of these categories (ViRL39K `category`)."}
    )
    pass_rate_column: str = field(
        default="PassRate_7BBase",
        metadata={
            "help": "Column the pass-rate filter reads (ViRL39K: PassRate_7BBase or PassRate_32BTrained)."
        },
    )
    min_pass_rate: float | None = field(
        default=None,
        metadata={"help": "Keep rows whose pass rate is above this (e.g. 0.0 drops never-solved items)."},
    )
    max_pass_rate: float | None = field(
        default=None,
        metadata={"help": "Keep rows whose pass rate is below this (e.g. 1.0 drops always-solved items)."},
    )

    # Model
    freeze_vision_tower: bool = field(
        default=False,
        metadata={"help": "Train the language model only: the vision encoder keeps its weights."},
    )

    # Rewards
    reward_funcs: list[str] = field(
        default_factory=lambda: ["caption_reasoner"],
        metadata={"help": "Reward functions by registered name (caption_reasoner; caption_gain, its variant minus the "
                  "blind reasoner's accuracy; caption_leak_penalty; answer_accuracy; boxed_format) or dotted path; "
                  "weights go in GRPOConfig.reward_weights."},
    )  # fmt: skip
    grader: str = field(
        default="default",
        metadata={"help": "Answer grading: 'default' (ours: thinking, choices, units, sets) or 'strict' (the original "
                  "reward exactly: mathruler's extract_boxed_content + grade_answer), for reproduction runs."},
    )  # fmt: skip
    caption_table_steps: int = field(
        default=10,
        metadata={"help": "With report_to wandb: log a sampled table (image, question, caption, reasoner answer, "
                  "gold, score) every N steps; 0 turns it off."},
    )  # fmt: skip
    reward_audit: bool = field(
        default=True,
        metadata={"help": "Write audit records (question, caption, reasoner answers, gold, score, leak and failure "
                  "flags) to output_dir/audit, reward_audit_captions per step."},
    )  # fmt: skip
    reward_audit_captions: int = field(
        default=16,
        metadata={"help": "Audit records per optimizer step over all ranks (each rank its share, leaked and failed "
                  "captions get as many again); -1: every caption. 16 keeps a 1000-step run under 0.7 GB with "
                  "8192-token answers and 1000-token captions."},
    )  # fmt: skip

    reward_caption_grammar: str | None = field(
        default=None,
        metadata={"help": "A regular expression that a well-formed caption matches whole: <reward>/well_formed logs "
                  "the share that do (synthetic tasks know their captions' grammar). <reward>/known_words, the "
                  "share of the captions' words that are English words, is logged always."},
    )  # fmt: skip
    reward_answer_classes: list[str] | None = field(
        default=None,
        metadata={"help": "Gold answers whose mean reward is logged apiece, <reward>/reward_by_answer/<answer> "
                  "(e.g. the colour task's four colours): a class the captioner gives up on shows."},
    )  # fmt: skip

    # Reasoner
    reasoner_backend: str = field(
        default="vllm",
        metadata={"help": "'vllm' (in-process, one training process), 'openai' (a server such as `vllm serve`, "
                  "for several processes) or 'transformers' (tiny models, debugging)."},
    )  # fmt: skip
    reasoner_model: str | None = field(
        default="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        metadata={
            "help": "Reasoner checkpoint (path or Hub id); with 'openai', the served model name (None: the first served)."
        },
    )
    reasoner_url: str | None = field(
        default=None,
        metadata={"help": "Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."},
    )
    reasoner_api_key_env: str = field(
        default="REASONER_API_KEY",
        metadata={"help": "Environment variable holding the server's API key (never put keys in YAML)."},
    )
    reasoner_num_samples: int = field(
        default=1, metadata={"help": "Reasoner answers per caption (k); the reward is their mean accuracy."}
    )
    reasoner_temperature: float = field(default=1.0, metadata={"help": "Reasoner sampling temperature."})
    reasoner_top_p: float = field(default=1.0, metadata={"help": "Reasoner nucleus sampling."})
    reasoner_max_tokens: int = field(default=8192, metadata={"help": "Reasoner answer length cap (tokens)."})
    reasoner_seed: int | None = field(
        default=None,
        metadata={"help": "Reasoner sampling seed: per-request seeds derive from it (vLLM on GPU, servers); "
                  "the vllm backend also seeds its engine with it. None: random."},
    )  # fmt: skip
    reasoner_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "vLLM backend: share of GPU memory for the reasoner engine."}
    )
    reasoner_tensor_parallel_size: int = field(
        default=1, metadata={"help": "vLLM backend: tensor parallel size."}
    )
    reasoner_max_model_len: int | None = field(
        default=None, metadata={"help": "vLLM backend: context length (None: the model's)."}
    )
    reasoner_dtype: str = field(
        default="auto", metadata={"help": "Reasoner weights dtype ('auto', 'bfloat16', ...)."}
    )
    reasoner_enforce_eager: bool = field(
        default=False, metadata={"help": "vLLM backend: no CUDA graphs (faster start, slower decode)."}
    )
    reasoner_sleep: bool = field(
        default=False,
        metadata={"help": "vLLM backend (GPU): the in-process reasoner sleeps between reward calls (vLLM sleep mode "
                  "level 1: its weights wait in CPU memory, its KV cache is freed), so the policy's forward and "
                  "backward passes get its GPU memory; each reward call wakes it (BENCHMARKS.md: the cost)."},
    )  # fmt: skip
    reasoner_engine_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "vLLM backend: further vllm.LLM arguments of the reasoner's engine, a mapping (YAML) or a JSON "
                  "string, e.g. {kv_cache_dtype: fp8, enable_prefix_caching: true}; arguments the reasoner_* fields "
                  "set are refused here."},
    )  # fmt: skip
    reasoner_timeout: float | None = field(
        default=None,
        metadata={"help": "openai backend: seconds per request; None: 60 + reasoner_max_tokens / 4 (4 tokens a second "
                  "for the longest answer)."},
    )  # fmt: skip
    reasoner_max_retries: int = field(
        default=3,
        metadata={"help": "openai backend: retries of a request that failed by connection, timeout, 429 or 5xx "
                  "(other 4xx answers are final)."},
    )  # fmt: skip
    reasoner_max_failed_fraction: float = field(
        default=0.5,
        metadata={"help": "Stop the run (naming the reasoner URL) when more than this share of one reward call's "
                  "captions, all ranks, failed for good; below it they score 0 and count in caption_reasoner/failed."},
    )  # fmt: skip
    reasoner_blind_samples: int = field(
        default=4,
        metadata={"help": "caption_gain: blind answers (question without caption) per prompt, once per prompt per run."},
    )  # fmt: skip
    reasoner_concurrency: int = field(
        default=64, metadata={"help": "openai backend: requests in flight per process."}
    )
    drop_zero_variance_groups: bool = field(
        default=False,
        metadata={"help": "leave the captions of groups that all scored the same (advantage 0) out of the training "
                  "forward and backward: the same gradient with beta 0 and loss_type dapo/cispo/vespo, less the "
                  "dropped rows' KL term with beta > 0 (racro_trl/training/groups.py)."},
    )  # fmt: skip
    reasoner_overlap: bool = field(
        default=True,
        metadata={"help": "openai backend: send the reasoner requests as soon as the captions are sampled, so they run "
                  "while the policy computes its log-probs (the same requests, seeds and rewards as asking in the "
                  "reward call); false: ask in the reward call."},
    )  # fmt: skip

    def __post_init__(self):
        from .rewards import resolve_reward_name

        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"prompt_format must be one of {sorted(PROMPT_FORMATS)}, got {self.prompt_format!r}"
            )
        if self.image_ablation not in (None, "constant"):
            raise ValueError(f"image_ablation must be 'constant' or unset, got {self.image_ablation!r}")
        from ..reasoning.grading import GRADERS
        from .rewards import REASONER_REWARDS

        for name in self.reward_funcs:
            resolve_reward_name(name)
        if self.grader not in GRADERS:
            raise ValueError(f"grader must be one of {', '.join(GRADERS)}, got {self.grader!r}")
        reasoner_rewards = [name for name in self.reward_funcs if name in REASONER_REWARDS]
        if self.prompt_format == "qa_cot" and reasoner_rewards:
            raise ValueError(
                f"{reasoner_rewards[0]} scores captions, but prompt_format is qa_cot (the policy answers the question "
                "itself); use reward_funcs: [answer_accuracy] for the CRO-GRPO stage, or prompt_format: caption for CRO"
            )
        if len(reasoner_rewards) > 1:
            raise ValueError(
                f"reward_funcs has {reasoner_rewards}: each would query the reasoner; keep one (caption_gain logs "
                "caption_gain/accuracy, the caption_reasoner reward, too)"
            )
        if self.reward_caption_grammar is not None:
            import re

            try:
                re.compile(self.reward_caption_grammar)
            except re.error as error:
                raise ValueError(
                    f"reward_caption_grammar is not a regular expression ({error}): {self.reward_caption_grammar!r}"
                ) from error
        if not 0 <= self.reasoner_max_failed_fraction <= 1:
            raise ValueError(
                f"reasoner_max_failed_fraction must be in [0, 1], got {self.reasoner_max_failed_fraction}"
            )
        if not reasoner_rewards:
            return
        if self.reasoner_backend not in BACKENDS:
            raise ValueError(
                f"reasoner_backend must be one of {', '.join(BACKENDS)}, got {self.reasoner_backend!r}"
            )
        if self.reasoner_backend == "openai" and not self.reasoner_url:
            raise ValueError(
                "reasoner_backend openai needs reasoner_url (e.g. http://127.0.0.1:8000/v1 of `vllm serve`)"
            )
        if self.reasoner_backend != "openai" and self.reasoner_url:
            raise ValueError(
                f"reasoner_url is set but reasoner_backend is {self.reasoner_backend!r}; "
                "set reasoner_backend: openai to use the server, or remove reasoner_url"
            )
        if self.reasoner_backend != "openai" and not self.reasoner_model:
            raise ValueError(
                f"reasoner_backend {self.reasoner_backend} needs reasoner_model (a path or Hub id)"
            )
        if self.reasoner_sleep and self.reasoner_backend != "vllm":
            raise ValueError(
                f"reasoner_sleep puts the in-process vLLM reasoner to sleep, but reasoner_backend is "
                f"{self.reasoner_backend!r}; set reasoner_backend: vllm or remove reasoner_sleep"
            )
        self._check_engine_kwargs()
        if self.reasoner_num_samples < 1:
            raise ValueError(f"reasoner_num_samples must be >= 1, got {self.reasoner_num_samples}")
        if self.reasoner_max_tokens < 1:
            raise ValueError(f"reasoner_max_tokens must be >= 1, got {self.reasoner_max_tokens}")

    # vllm.LLM arguments that named reasoner_* fields set (VLLMReasoner's own arguments included).
    ENGINE_FIELDS = {
        "model": "reasoner_model", "tensor_parallel_size": "reasoner_tensor_parallel_size",
        "gpu_memory_utilization": "reasoner_gpu_memory_utilization", "max_model_len": "reasoner_max_model_len",
        "dtype": "reasoner_dtype", "enforce_eager": "reasoner_enforce_eager", "seed": "reasoner_seed",
        "sleep": "reasoner_sleep", "enable_sleep_mode": "reasoner_sleep",
    }  # fmt: skip

    def _check_engine_kwargs(self) -> None:
        import json

        if isinstance(self.reasoner_engine_kwargs, str):
            try:
                self.reasoner_engine_kwargs = json.loads(self.reasoner_engine_kwargs)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"reasoner_engine_kwargs is not a JSON object ({e}): {self.reasoner_engine_kwargs!r}"
                ) from e
        kwargs = self.reasoner_engine_kwargs
        if kwargs is None:
            return
        if not isinstance(kwargs, dict):
            raise ValueError(
                f"reasoner_engine_kwargs must be a mapping of vllm.LLM arguments, got {kwargs!r}"
            )
        if self.reasoner_backend != "vllm":
            raise ValueError(
                f"reasoner_engine_kwargs are vllm.LLM arguments, but reasoner_backend is {self.reasoner_backend!r}"
            )
        named = {k: self.ENGINE_FIELDS[k] for k in kwargs if k in self.ENGINE_FIELDS}
        if named:
            raise ValueError(
                "reasoner_engine_kwargs sets " + ", ".join(f"{k} (use {field})" for k, field in named.items())
            )

    def reasoner_kwargs(self) -> dict:
        """Backend options for :func:`racro_trl.reasoning.reasoners.build_reasoner`."""
        import os

        if self.reasoner_backend == "openai":
            return {
                "api_key": os.environ.get(self.reasoner_api_key_env),
                "timeout": self.reasoner_timeout,
                "max_retries": self.reasoner_max_retries,
                "concurrency": self.reasoner_concurrency,
            }
        if self.reasoner_backend == "vllm":
            return {
                "tensor_parallel_size": self.reasoner_tensor_parallel_size,
                "gpu_memory_utilization": self.reasoner_gpu_memory_utilization,
                "max_model_len": self.reasoner_max_model_len,
                "dtype": self.reasoner_dtype,
                "enforce_eager": self.reasoner_enforce_eager,
                "seed": self.reasoner_seed,
                "sleep": self.reasoner_sleep,
                **(self.reasoner_engine_kwargs or {}),
            }
        return {"dtype": self.reasoner_dtype}


def validate_run(script_args: CROScriptArguments, training_args, num_processes: int) -> None:
    """Checks that need GRPOConfig and the launch too; raise with the fix in the message."""
    from .rewards import REASONER_REWARDS

    if (
        any(name in script_args.reward_funcs for name in REASONER_REWARDS)
        and script_args.reasoner_backend == "vllm"
        and num_processes > 1
        and script_args.reasoner_tensor_parallel_size > 1
    ):
        # Several processes each hold a reasoner replica on their own GPU (the original setup); a
        # tensor-parallel replica per process would need GPUs the process does not own.
        raise ValueError(
            f"reasoner_backend vllm with {num_processes} training processes gives every process its own replica, "
            f"which cannot span reasoner_tensor_parallel_size={script_args.reasoner_tensor_parallel_size} GPUs; "
            "serve the reasoner once (`vllm serve <model> --tensor-parallel-size N`) and set reasoner_backend: openai"
        )
    if script_args.reasoner_sleep:
        if (
            training_args.use_vllm
            and training_args.vllm_mode == "colocate"
            and training_args.vllm_enable_sleep_mode
        ):
            # measured on an H200: "CuMem allocator can only be used for one instance per process"
            raise ValueError(
                "reasoner_sleep and vllm_enable_sleep_mode cannot both be on in colocate mode: vLLM's sleep mode "
                "allows one sleeping engine per process, and both engines run in the training process; keep "
                "reasoner_sleep (the reasoner's memory is the larger share: BENCHMARKS.md)"
            )
        from vllm.platforms import current_platform

        if not current_platform.is_sleep_mode_available():
            raise ValueError(
                f"reasoner_sleep needs vLLM's sleep mode, which vLLM does not offer on this platform "
                f"({current_platform.device_type}); remove reasoner_sleep"
            )
    if training_args.log_completions and "wandb" in (training_args.report_to or []):
        raise ValueError(
            "log_completions with report_to wandb fails on CRO's multimodal prompts (wandb cannot type the table); "
            "set log_completions: false: the caption table (caption_table_steps) logs the captions instead"
        )
    if getattr(training_args, "hub_token", None):
        raise ValueError(
            "hub_token is set in the recipe or on the command line, where it would be saved with the run "
            "(training_args.bin); remove it and export HF_TOKEN in the environment instead"
        )
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(
        script_args.reward_funcs
    ):
        raise ValueError(
            f"reward_weights has {len(training_args.reward_weights)} entries for {len(script_args.reward_funcs)} "
            f"reward_funcs {script_args.reward_funcs}; give one weight per function"
        )


def check_references(script_args: CROScriptArguments, model_args) -> None:
    """Every model and config file the run names exists (a folder with a config.json) or is a Hub id:
    one line naming the argument otherwise, before the policy loads (launch_checks.py)."""
    from .launch_checks import check_model_reference
    from .rewards import REASONER_REWARDS

    check_model_reference(model_args.model_name_or_path, "model_name_or_path")
    asks_reasoner = any(name in REASONER_REWARDS for name in script_args.reward_funcs)
    if asks_reasoner and script_args.reasoner_backend != "openai":  # a served model is the server's id
        check_model_reference(script_args.reasoner_model, "reasoner_model")


def keep_vllm_out(script_args: CROScriptArguments, training_args) -> None:
    """Keep vLLM out of this process when the run does not use it (the recipe logs that it did).

    TRL 1.16 imports vLLM whenever it is installed (``trl.generation``), also for a run that samples
    captions with transformers and asks a served reasoner: on 2 CPU cores the trainer's imports took
    20.1 s with it and 12.6 s without, in every rank of every launch. Call before importing the
    trainer (it uses :func:`racro_trl.compat.hide_vllm`). A run that samples with vLLM, holds a vLLM
    reasoner or names its own reward function (a dotted path, which may import vLLM) keeps it.
    """
    import sys

    from ..compat import hide_vllm

    if (
        training_args.use_vllm
        or script_args.reasoner_backend == "vllm"
        or any("." in name for name in script_args.reward_funcs)
        or "vllm" in sys.modules
    ):
        return
    hide_vllm()


def make_parser() -> trl.TrlParser:
    """The parser of ``recipes/cro.py``: script arguments, GRPOConfig, ModelConfig."""
    return trl.TrlParser((CROScriptArguments, trl.GRPOConfig, trl.ModelConfig))
