"""The mini-RACRO recipe's second reward: -1 for a caption that is not a list of facts about distinct
tiles (:func:`racro_trl.mini.task.well_formed`), else 0 (``reward_funcs: [caption_reasoner,
racro_trl.mini.rewards.malformed_caption_penalty]``, ``reward_weights: [1.0, 1.0]``).

Why the miniature needs it: its reasoners (0.6M parameters) guess when a caption is not one they were
trained on. Read from CRO's audit records (2026-12-07): given "Tile 1 is blue. Tile 3 is Tile 4 is
blue." for a question about tiles 2 and 4, the weak reasoner wrote "Tile 4 is blue, 3. Tile 2 is
yellow, 4." (tile 2 is not stated). Its guesses earned malformed captions more than well-formed ones
(0.29 against 0.19 in steps 205-224 of that run, seed 0), and CRO made 96% of the captions malformed
(26% in its first 20 steps). A large reasoner reading such a caption has nothing to guess from; the
penalty makes a malformed caption score below any well-formed one, as it would there. A well-formed
caption is scored by the reasoner alone.
"""

from __future__ import annotations

from ..training.rewards import completion_text
from .task import well_formed


def malformed_caption_penalty(completions, **kwargs) -> list[float]:
    """-1.0 for each caption that is not well-formed, else 0.0.

    >>> malformed_caption_penalty(["Tile 1 is red. Tile 2 is blue.", "Tile 3 is red. Tile 3 is red."])
    [0.0, -1.0]
    """
    return [0.0 if well_formed(completion_text(c)) else -1.0 for c in completions]
