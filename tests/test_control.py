"""The control: the learning run with the policy's images made constant stays at chance, on one rank
and on two (groups split across the ranks). It shows that the image reaches the policy and that each
reward follows its own caption: the learning runs (tests/test_train.py, tests/test_learning.py) differ
from these only in the images.

The reasoner is the reader served by a real vLLM OpenAI-compatible server (CPU). Threshold: the mean
reward of the last 5 logged steps within 0.1 of chance (1/4). Measured on 2 cores: see BENCHMARKS.md.
"""

import pytest

from helpers import STEPS, TWO_RANKS, served_colour_run
from racro_trl.reporting.run_summary import first_last_rewards
from racro_trl.toy.colour_task import CHANCE

pytestmark = pytest.mark.slow


def assert_at_chance(steps: list[dict]) -> None:
    first, last = first_last_rewards(steps)
    assert abs(last - CHANCE) <= 0.1, (first, last, [round(h["reward"], 3) for h in steps])


def test_control_with_constant_images_stays_at_chance(colour_models, colour_data, reader_server, tmp_path):
    steps = served_colour_run(
        colour_models, colour_data, reader_server, tmp_path / "control", "--image_ablation", "constant"
    )
    assert len(steps) == STEPS
    assert_at_chance(steps)


def test_two_ranks_control_stays_at_chance(colour_models, colour_data, reader_server, tmp_path):
    steps = served_colour_run(
        colour_models, colour_data, reader_server, tmp_path / "ddp-control", "--image_ablation", "constant",
        *TWO_RANKS, num_processes=2,
    )  # fmt: skip
    assert_at_chance(steps)
