"""The third-party workarounds in racro_trl/compat.py: each does what its table row says, and none
leaves anything behind in the caller's process."""

import os

from racro_trl.compat import vllm_engine_env, vllm_engine_kwargs

VARIABLES = ("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_ENABLE_V1_MULTIPROCESSING")


def test_vllm_engine_env_sets_its_variables_only_inside(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with vllm_engine_env():
        # no GPU here: spawn wherever it starts processes, and the engine core in this process
        assert [os.environ.get(n) for n in VARIABLES] == ["spawn", "0"]
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # as vLLM itself may set it while building
    assert not any(name in os.environ for name in VARIABLES)

    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "forkserver")  # the caller's own choice is kept
    with vllm_engine_env():
        assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "forkserver"
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "forkserver"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ


def test_a_real_engine_leaves_the_environment_as_it_was(vllm_reasoner):
    """The session's in-process vLLM reasoner was built through vllm_engine_env: nothing of it stays
    (tests and callers once had to pop VLLM_ENABLE_V1_MULTIPROCESSING before starting a server)."""
    assert vllm_reasoner.generate([[{"role": "user", "content": "hi"}]], 1, _sampling()).texts[0]
    assert not any(name in os.environ for name in VARIABLES), {n: os.environ.get(n) for n in VARIABLES}


def _sampling():
    from racro_trl.reasoning.reasoners import Sampling

    return Sampling(max_tokens=4)


def test_vllm_engine_kwargs_leaves_an_unseeded_engine_to_vllm(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert vllm_engine_kwargs({"dtype": "auto"}, None) == {
        "dtype": "auto"
    }  # no seed=None, no GPU: no device_ids
    assert vllm_engine_kwargs({}, 3) == {"seed": 3}
