"""The examples in racro_trl's docstrings hold (doctest). Only the modules that have one are imported:
pytest's --doctest-modules imported every module, TRL's trainer and vLLM with them, in each xdist worker
(`pytest --collect-only` of the suite: 24 s -> 8 s on 2 cores)."""

import doctest
import importlib
import io

import pytest

from helpers import REPO

MODULES = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in (REPO / "racro_trl").rglob("*.py")
    if ">>>" in path.read_text()
)


def test_modules_with_examples_are_found():
    assert {
        "racro_trl.reasoning.grading",
        "racro_trl.reasoning.prompts",
        "racro_trl.training.rewards",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    runner, report = doctest.DocTestRunner(), io.StringIO()
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.attempted and not result.failed, report.getvalue()
