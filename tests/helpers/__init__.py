"""The test suite's shared helpers (fixtures stay in conftest.py): paths, launches, local servers,
finished runs, benchmark TSVs. Tests import them as ``from helpers import ...``."""

from .launch import TWO_RANKS, colour_launch, free_port, racro, run_logged, tiny_launch, two_machines
from .paths import PYTHON, REPO
from .runs import (
    CAPTIONS,
    STEPS,
    assert_learned,
    assert_rewards_follow_ranks,
    audit,
    logged_steps,
    served_colour_run,
)
from .servers import reader_command, start_server, stop_server, vllm_server, wait_healthy
from .tsv import b64, write_tsv

__all__ = [
    "CAPTIONS", "PYTHON", "REPO", "STEPS", "TWO_RANKS", "assert_learned", "assert_rewards_follow_ranks", "audit",
    "b64", "colour_launch", "free_port", "logged_steps", "racro", "reader_command", "run_logged",
    "served_colour_run", "start_server", "stop_server", "tiny_launch", "two_machines", "vllm_server", "wait_healthy",
    "write_tsv",
]  # fmt: skip
