"""The caption-blind sabotage of mini-RACRO: a reward whose reasoner reads every question with an
empty caption, so no caption can change its answer. CRO rewarded by it must not gain
(``racro repro-mini --sabotage blind``; docs/mini-racro.md).

The recipe names it by its dotted path (``--reward_funcs racro_trl.mini.sabotage.caption_blind``);
such a function gets no script arguments, so the reasoner's folder comes from the environment
(``RACRO_MINI_BLIND_REASONER``, set by :func:`racro_trl.mini.repro.cro`) and its settings are read from
recipes/mini/cro.yaml's ``reasoner_*`` keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..reasoning.reasoners import Sampling, build_reasoner
from ..training.rewards import CaptionReward

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini" / "cro.yaml"
_reward: CaptionReward | None = None


def _blind_reward() -> CaptionReward:
    """A caption reward with the recipe's ``reasoner_*`` settings, on the environment's reasoner."""
    import yaml

    from ..training.configs import CROScriptArguments

    model = os.environ.get("RACRO_MINI_BLIND_REASONER")
    if not model:
        raise ValueError("caption_blind needs RACRO_MINI_BLIND_REASONER, the reasoner's folder")
    recipe = yaml.safe_load(RECIPE.read_text())
    args = CROScriptArguments(
        **{**{k: v for k, v in recipe.items() if k.startswith("reasoner_")}, "reasoner_model": model}
    )
    sampling = Sampling(
        args.reasoner_temperature, args.reasoner_top_p, args.reasoner_max_tokens, args.reasoner_seed
    )
    return CaptionReward(
        lambda: build_reasoner(args.reasoner_backend, model, **args.reasoner_kwargs()),
        sampling=sampling,
        name="caption_blind",
    )


def caption_blind(prompts, completions, question, answer, **kwargs) -> list[float]:
    """The weak reasoner's reward for the question alone: every caption is replaced by an empty one."""
    global _reward
    if _reward is None:
        _reward = _blind_reward()
    return _reward(prompts, [""] * len(completions), question, answer, **kwargs)
