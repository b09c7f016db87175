"""The models the suite reads from tests/data (tests/helpers/committed.py) are those the project's code
builds: once a file that decides their weights changes, this fails until the set is built anew."""

import pytest

from helpers.committed import SETS


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_committed_models_were_built_by_this_code(name):
    changed = SETS[name].changed_since_built()
    assert not changed, (
        f"tests/data/{name} was built before {changed} changed: rebuild it with `make {name}-models`"
    )
