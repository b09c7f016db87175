"""The CRO reward against a real vLLM (CPU) engine running the tiny reasoner."""

import json

import pytest

from racro_trl.reasoning.grading import grade, parse_choices
from racro_trl.reasoning.reasoners import Sampling
from racro_trl.training.rewards import CaptionReward, answer_accuracy, boxed_format, get_reward_funcs

pytestmark = pytest.mark.slow


class CountingReasoner:
    """The real reasoner, with a record of every batch it was asked for."""

    def __init__(self, inner):
        self.inner, self.batches, self.name = inner, [], inner.name

    def generate(self, chats, n, sampling, *, partial=False):
        self.batches.append((chats, n))
        return self.inner.generate(chats, n, sampling, partial=partial)

    def close(self):
        pass


def _batch(n_prompts=3, per_prompt=4):
    questions = [
        "How many red circles are in the image?",
        "<image>What colour is the square?",
        "Which shape?\nA. circle\nB. square",
    ]
    answers = ["3", "red", "B"]
    captions, q, a = [], [], []
    for i in range(n_prompts):
        for j in range(per_prompt):
            captions.append(
                [{"role": "assistant", "content": f"caption {i}-{j}: {j + 1} red circles on grey"}]
            )
            q.append(questions[i % 3])
            a.append(answers[i % 3])
    return captions, q, a


def test_one_backend_call_per_reward_call_and_prompts(vllm_reasoner, tmp_path):
    reasoner = CountingReasoner(vllm_reasoner)
    reward = CaptionReward(
        reasoner, num_samples=3, sampling=Sampling(max_tokens=8, seed=0), audit_dir=tmp_path
    )
    captions, questions, answers = _batch()
    logged = {}
    rewards = reward(None, captions, question=questions, answer=answers, log_metric=logged.__setitem__)

    assert len(reasoner.batches) == 1, "all captions of a reward call go to the reasoner in one call"
    chats, n = reasoner.batches[0]
    assert n == 3 and len(chats) == len(captions) == 12
    for chat, caption, question in zip(chats, captions, questions, strict=True):
        user = chat[-1]["content"]
        assert caption[0]["content"] in user
        assert question.replace("<image>", "") in user
        assert "<image>" not in user
    assert len(rewards) == 12 and all(r in {0.0, 1 / 3, 2 / 3, 1.0} for r in rewards)
    assert logged["caption_reasoner/answer_extracted"] > 0.5  # the tiny reasoner writes boxed answers

    records = [
        json.loads(line) for line in (tmp_path / "caption_reasoner-rank0.jsonl").read_text().splitlines()
    ]
    assert len(records) == 12
    for record, r in zip(records, rewards, strict=True):
        assert set(record) >= {
            "question",
            "caption",
            "leak",
            "failed",
            "reasoner_outputs",
            "extracted",
            "gold",
            "scores",
            "reward",
        }
        assert len(record["reasoner_outputs"]) == len(record["extracted"]) == len(record["scores"]) == 3
        assert record["reward"] == pytest.approx(sum(record["scores"]) / 3) == pytest.approx(r)

    reward(None, captions[:4], question=questions[:4], answer=answers[:4])
    assert len(reasoner.batches) == 2
    assert len((tmp_path / "caption_reasoner-rank0.jsonl").read_text().splitlines()) == 16


class RecordingReasoner:
    """The real reasoner, with a record of every output it wrote and whether it ran out of tokens."""

    def __init__(self, inner):
        self.inner, self.outputs, self.truncated = inner, [], []

    def __getattr__(self, name):  # name, ...: the real reasoner's
        return getattr(self.inner, name)

    def generate(self, chats, n, sampling, *, partial=False):
        answers = self.inner.generate(chats, n, sampling, partial=partial)
        self.outputs += answers.texts
        self.truncated += answers.truncated
        return answers


def test_grading_of_real_outputs_is_consistent(vllm_reasoner):
    """Rewards are exactly the grades of what the reasoner wrote (each caption's mean over its 8 answers,
    graded here from the recorded outputs); some are right, some wrong."""
    reasoner = RecordingReasoner(vllm_reasoner)
    reward = CaptionReward(reasoner, num_samples=8, sampling=Sampling(max_tokens=8, seed=1))
    captions, questions, answers = _batch(n_prompts=3, per_prompt=4)
    rewards = reward(None, captions, question=questions, answer=answers)
    assert len(reasoner.outputs) == len(captions) and all(len(outs) == 8 for outs in reasoner.outputs)
    expected = [
        sum(grade(o, gold, parse_choices(q), t)[1] for o, t in zip(outs, cut, strict=True)) / len(outs)
        for outs, cut, q, gold in zip(reasoner.outputs, reasoner.truncated, questions, answers, strict=True)
    ]
    assert rewards == expected
    assert 0.0 < sum(rewards) / len(rewards) < 1.0, "tiny reasoner: sometimes right, sometimes wrong"
    assert len(set(rewards)) > 1, "rewards that differ between captions, so an order mix-up would show"


def test_output_without_box_scores_zero_and_is_counted(vllm_reasoner, tmp_path):
    # One token cannot hold a complete \boxed{...}: every answer is "truncated".
    reward = CaptionReward(
        vllm_reasoner, num_samples=2, sampling=Sampling(max_tokens=1, seed=0), audit_dir=tmp_path
    )
    captions, questions, answers = _batch(n_prompts=1, per_prompt=4)
    logged = {}
    assert (
        reward(None, captions, question=questions, answer=answers, log_metric=logged.__setitem__) == [0.0] * 4
    )
    assert logged["caption_reasoner/answer_extracted"] == 0.0
    records = [
        json.loads(line) for line in (tmp_path / "caption_reasoner-rank0.jsonl").read_text().splitlines()
    ]
    assert all(r["extracted"] == [None, None] for r in records)


def test_reasoner_is_built_lazily_once(tiny_models):
    built = []

    def factory():
        built.append(1)
        from racro_trl.reasoning.reasoners import build_reasoner

        return build_reasoner("transformers", str(tiny_models["reasoner"]))

    reward = CaptionReward(factory, sampling=Sampling(max_tokens=6, seed=0))
    assert built == []
    captions, questions, answers = _batch(n_prompts=1, per_prompt=2)
    reward(None, captions, question=questions, answer=answers)
    reward(None, captions, question=questions, answer=answers)
    assert built == [1]


def test_registry_and_policy_side_rewards():
    completions = [
        [{"role": "assistant", "content": "It is \\boxed{B}"}],
        [{"role": "assistant", "content": "no idea"}],
    ]
    assert answer_accuracy(completions, ["B", "B"], ["Which?\nA. x\nB. y", "q"]) == [1.0, 0.0]
    assert boxed_format(completions) == [1.0, 0.0]
    funcs = get_reward_funcs(["answer_accuracy", "racro_trl.training.rewards.boxed_format"], None, None)
    assert funcs[0].__name__ == "answer_accuracy" and funcs[1] is boxed_format
    assert funcs[0](completions, ["B", "B"], ["Which?\nA. x\nB. y", "q"]) == [1.0, 0.0]
    # the strict grader (the original reward) takes the last box of the whole output, thinking included
    strict = get_reward_funcs(["answer_accuracy"], type("Args", (), {"grader": "strict"}), None)[0]
    cut = [[{"role": "assistant", "content": "<think>so \\boxed{B} unless"}]]
    assert strict(cut, ["B"], ["q"]) == [1.0] and funcs[0](cut, ["B"], ["q"]) == [0.0]
    with pytest.raises(ValueError, match="valid names"):
        get_reward_funcs(["nope"], None, None)
    with pytest.raises(ValueError, match="could not be imported"):
        get_reward_funcs(["racro_trl.training.rewards.nope"], None, None)
