"""The caption-blind sabotage of mini-RACRO: a reward whose reasoner reads every question with an
empty caption, so no caption can change its answer. CRO rewarded by it must not gain
(``racro repro-mini --sabotage blind``; docs/mini-racro.md).

The recipe names it by its dotted path (``--reward_funcs racro_trl.mini.sabotage.caption_blind``);
such a function gets no script arguments, so the reasoner's folder comes from the environment
(``RACRO_MINI_BLIND_REASONER``, set by :func:`racro_trl.mini.repro.cro`) and its settings are those of
recipes/mini/cro.yaml.
"""

from __future__ import annotations

import os

from ..reasoning.reasoners import Sampling, build_reasoner
from ..training.rewards import CaptionReward

_reward: CaptionReward | None = None


def _blind_reward() -> CaptionReward:
    model = os.environ.get("RACRO_MINI_BLIND_REASONER")
    if not model:
        raise ValueError("caption_blind needs RACRO_MINI_BLIND_REASONER, the reasoner's folder")

    def factory():
        return build_reasoner("vllm", model, max_model_len=512, dtype="float32", enforce_eager=True, seed=0)

    return CaptionReward(
        factory, sampling=Sampling(temperature=1.0, top_p=1.0, max_tokens=32, seed=0), name="caption_blind"
    )


def caption_blind(prompts, completions, question, answer, **kwargs) -> list[float]:
    """The weak reasoner's reward for the question alone: every caption is replaced by an empty one."""
    global _reward
    if _reward is None:
        _reward = _blind_reward()
    return _reward(prompts, [""] * len(completions), question, answer, **kwargs)
