"""The model card of a CRO run: method, base model, reasoner, data, rewards, recipe, citation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..reporting.run_summary import reward_table
from .rewards import REASONER_REWARDS

logger = logging.getLogger(__name__)

TAGS = ["racro", "cro", "trl", "grpo"]
CITATION = """@article{gou2025perceptual,
  author  = {Gou, Yunhao and Chen, Kai and Liu, Zhili and Hong, Lanqing and Jin, Xin and Li, Zhenguo and Kwok, James T. and Zhang, Yu},
  title   = {Perceptual Decoupling for Scalable Multi-modal Reasoning via Reward-Optimized Captioning},
  journal = {arXiv preprint arXiv:2506.04559},
  year    = {2025},
}"""


def _hub_id(name: str | None) -> str | None:
    """``name`` if it looks like a Hub id (not a local path)."""
    return name if name and not os.path.exists(name) and not name.startswith((".", "/")) else None


def model_card(
    script_args, training_args, model_args, log_history: list[dict], recipe_text: str | None
) -> str:
    """Markdown with YAML metadata for the run's README.md."""
    base, dataset = _hub_id(model_args.model_name_or_path), _hub_id(script_args.dataset_name)
    meta = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags:"]
    meta += [f"- {t}" for t in TAGS]
    meta += [f"base_model: {base}"] if base else []
    meta += ["datasets:", f"- {dataset}"] if dataset else []
    meta.append("---")
    stage = (
        "CRO-GRPO (answer-reward GRPO on the qa_cot prompt)"
        if script_args.prompt_format == "qa_cot"
        else "CRO"
    )
    served = " at a server (`reasoner_url`)" if script_args.reasoner_backend == "openai" else ""
    reasoner = (
        f"{script_args.reasoner_model or '(served)'} via `{script_args.reasoner_backend}`{served}, "
        f"{script_args.reasoner_num_samples} answer(s) per caption"
    )
    steps = [h for h in log_history if "reward" in h]
    lines = [
        *meta,
        "",
        f"# {Path(training_args.output_dir).name}",
        "",
        "A Qwen2.5-VL captioner trained with RACRO's Caption Reward Optimization ([arXiv 2506.04559]"
        "(https://arxiv.org/abs/2506.04559)): GRPO on query-conditioned captions, rewarded by how often a frozen "
        "text-only reasoner, reading only the caption and the question, reaches the ground-truth answer. "
        "Trained with racro-trl (TRL).",
        "",
        f"- **Stage**: {stage}",
        f"- **Base model**: {model_args.model_name_or_path}",
        f"- **Reasoner**: {reasoner if set(REASONER_REWARDS) & set(script_args.reward_funcs) else 'none (answer reward)'}",
        f"- **Dataset**: {script_args.dataset_name}",
        f"- **Rewards**: {', '.join(script_args.reward_funcs)}",
        f"- **Steps**: {steps[-1]['step'] if steps else 0}; learning rate {training_args.learning_rate}, "
        f"{training_args.num_generations} captions per prompt, beta {training_args.beta}",
        "",
        "## Reward per step",
        "",
        "```",
        reward_table(log_history),
        "```",
        "",
        "## Use",
        "",
        "```bash",
        "racro infer --image IMAGE --question QUESTION --mllm THIS_MODEL --reasoner ANY_TEXT_REASONER",
        "```",
    ]
    if recipe_text:
        lines += ["", "## Recipe", "", "```yaml", recipe_text.strip(), "```"]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def check_hub_push(training_args) -> None:
    """Before any model loads: a push needs a valid repo id and a token the Hub accepts.

    The token is read from the environment (``HF_TOKEN``) or the local login, never from the recipe.
    """
    if not training_args.push_to_hub:
        return
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"push_to_hub: hub_model_id {repo_id!r} is not a valid repo id ({error})") from None
    token = get_token()
    if not token:
        raise ValueError(
            "push_to_hub needs a Hub token: export HF_TOKEN=<a write token> (or `hf auth login`)"
        )
    try:
        user = HfApi().whoami(token=token)
    except Exception as error:  # 401, network failure: say which, keep the token out of the message
        raise ValueError(
            f"push_to_hub: the Hub did not accept the token ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    logger.info("pushing to %s as %s", repo_id, user.get("name"))
