"""Shared fixtures: tiny models built once per session, the colour task's committed models, one vLLM reasoner
engine per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import REPO, reader_command, start_server, stop_server, vllm_server, wait_healthy
from helpers.committed import COLOUR

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# `make test` runs two pytest-xdist workers, one test file at a time each (`--dist loadfile`: the
# module-scoped runs and engines stay on one worker), the longest files first: by the seconds each file
# took in a measured run (tests/durations.json; RACRO_RECORD_DURATIONS=1 writes it anew), a file not yet
# measured first of all.
DURATIONS = REPO / "tests" / "durations.json"


def pytest_configure(config):
    """Under xdist the tiny models are built here, once, before the workers start, and shared through
    RACRO_TINY_MODELS, beside a copy of the colour task's committed models (:data:`helpers.committed.COLOUR`);
    the reader's server starts here too (RACRO_READER_URL). (Measured on 2 cores: the workers as they are,
    each process with every core, ran the suite in 16 min; one thread per process, or one core per worker,
    took longer. Building the colour task's models here, as the suite did before, took 133 s of every run.)"""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("RACRO_TINY_MODELS"):
        import shutil
        import tempfile

        from racro_trl.toy.tiny import build_tiny_models

        shared = tempfile.mkdtemp(prefix="racro-tiny-")
        config.add_cleanup(lambda: shutil.rmtree(shared, ignore_errors=True))
        build_tiny_models(shared, colour_task=False)
        reader = COLOUR.copy_to(Path(shared))["reader"]
        # One reader server for both workers (each would start its own: ~1 CPU-minute), awaited by the
        # first test that needs it (reader_server).
        if not os.environ.get("RACRO_READER_URL"):
            log = Path(shared) / "server.log"
            server, url = start_server(reader_command(reader), log)
            config.add_cleanup(lambda: stop_server(server))
            os.environ["RACRO_READER_URL"], os.environ["RACRO_READER_LOG"] = url + "/v1", str(log)
        os.environ["RACRO_TINY_MODELS"] = shared


def pytest_collection_modifyitems(items):
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: -seconds.get(item.path.stem, float("inf")))  # stable: a file's order stays


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Each file's seconds (setup, call and teardown of its tests; xdist relays the workers' reports)."""
    stem = Path(report.fspath).stem
    _measured[stem] = _measured.get(stem, 0.0) + report.duration


def pytest_sessionfinish(session):
    if os.environ.get("RACRO_RECORD_DURATIONS") and not hasattr(session.config, "workerinput"):
        DURATIONS.write_text(
            json.dumps(dict(sorted(_measured.items(), key=lambda kv: -kv[1])), indent=1) + "\n"
        )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from racro_trl.toy.tiny import build_tiny_models

    # RACRO_TINY_MODELS: a folder `racro make-tiny --out` wrote, shared by pytest processes side by side
    return build_tiny_models(
        os.environ.get("RACRO_TINY_MODELS") or tmp_path_factory.mktemp("tiny"), colour_task=False
    )


@pytest.fixture(scope="session")
def colour_models(tiny_models) -> dict[str, Path]:
    """The colour task's reader reasoner and warm-started captioner (committed: :data:`helpers.committed.COLOUR`),
    copied beside the tiny models."""
    return tiny_models | COLOUR.copy_to(tiny_models["policy"].parent)


@pytest.fixture(scope="session")
def colour_data() -> Path:
    path = REPO / "data" / "colour"
    assert (path / "train.parquet").exists(), (
        "the shipped colour task is missing (racro make-sample-data --task colour)"
    )
    return path


@pytest.fixture(scope="session")
def reader_server(colour_models, tmp_path_factory):
    """The ``/v1`` URL of the reader's server on 127.0.0.1: the one `make test` starts for both workers
    (RACRO_READER_URL), else one for this session."""
    if os.environ.get("RACRO_READER_URL"):
        url = os.environ["RACRO_READER_URL"]
        wait_healthy(url.removesuffix("/v1"), Path(os.environ.get("RACRO_READER_LOG", "/dev/null")))
        yield url
        return
    with vllm_server(
        reader_command(colour_models["reader"]), tmp_path_factory.mktemp("server") / "server.log"
    ) as url:
        yield url + "/v1"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    path = REPO / "data" / "sample"
    assert (path / "train.parquet").exists(), "the shipped sample data is missing (racro make-sample-data)"
    return path


@pytest.fixture(scope="session")
def vllm_reasoner(tiny_models):
    """One in-process vLLM engine on the tiny reasoner for the whole session (~40 s to start)."""
    from racro_trl.reasoning.reasoners import build_reasoner

    reasoner = build_reasoner(
        "vllm",
        str(tiny_models["reasoner"]),
        max_model_len=1024,
        enforce_eager=True,
        gpu_memory_utilization=0.3,
    )
    yield reasoner
    reasoner.close()


@pytest.fixture(scope="session")
def vllm_mllm(tiny_models):
    """An in-process vLLM engine on the tiny policy, for the session: engines built in one process share
    vLLM's distributed state, and one dropped while another is in use (a module fixture going out of
    scope) tears it down under the other (test_rewards failed after test_evaluation)."""
    from racro_trl.evaluation.pipeline import build_mllm

    return build_mllm(
        "vllm", str(tiny_models["policy"]), max_model_len=1024, enforce_eager=True, gpu_memory_utilization=0.3
    )
