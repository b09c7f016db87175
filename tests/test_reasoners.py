"""The reasoner contract: every backend's ``generate`` gives back one :class:`Answers` per call (texts,
truncation, failures, output tokens, seconds), and the reward grades what it says."""

import json

from racro_trl.reasoning import prompts
from racro_trl.reasoning.reasoners import Answers, Sampling, TokenCount, build_reasoner
from racro_trl.toy.colour_task import COLOURS, QUESTION, caption
from racro_trl.training.rewards import CaptionReward


def test_transformers_backend_reports_truncation_tokens_and_time(colour_models, tmp_path):
    """The colour reader boxes a colour in a few tokens and stops: not truncated at 32 tokens, every
    answer truncated at 1; the reward's audit carries the same flags."""
    reasoner = TokenCount(build_reasoner("transformers", str(colour_models["reader"])))
    chats = [prompts.reasoner_reward_messages(caption(c), QUESTION) for c in COLOURS]
    full = reasoner.generate(chats, 2, Sampling(max_tokens=32, seed=0))
    cut = reasoner.generate(chats, 2, Sampling(max_tokens=1, seed=0))
    assert isinstance(full, Answers) and not full.errors and full.seconds > 0
    assert [len(a) for a in full.texts] == [2] * len(COLOURS)
    assert all(f"\\boxed{{{c}}}" in t for c, a in zip(COLOURS, full.texts, strict=True) for t in a), (
        full.texts
    )
    assert full.truncated == [[False, False]] * len(COLOURS)
    assert cut.truncated == [[True, True]] * len(COLOURS) and cut.tokens == 2 * len(COLOURS)
    assert reasoner.tokens == full.tokens + cut.tokens

    reward = CaptionReward(
        reasoner, num_samples=2, sampling=Sampling(max_tokens=1, seed=0), audit_dir=tmp_path
    )
    completions = [[{"role": "assistant", "content": caption(c)}] for c in COLOURS]
    assert reward(None, completions, question=[QUESTION] * len(COLOURS), answer=list(COLOURS)) == [0.0] * 4
    records = [json.loads(line) for line in (tmp_path / "caption_reasoner-rank0.jsonl").open()]
    assert [r["truncated"] for r in records] == [[True, True]] * len(COLOURS)
