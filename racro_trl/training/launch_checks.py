"""Launch-time checks of what a run names on disk or on the Hub, before any model loads.

A wrong model path used to surface after the policy had loaded, the dataset had been built and step 0
had begun, as transformers' "Repo id must be in the form ..." (and, on GPUs, after a vLLM start). These
checks take milliseconds and answer in one line that names the argument.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_model_reference(value: str | None, argument: str) -> None:
    """``value`` must be a local folder holding a ``config.json``, or a well-formed Hub id.

    A Hub id is checked for its form only (``huggingface_hub``'s own rule): the Hub may be out of reach,
    and the loader reports a missing repository itself. A value whose first component is a local folder
    (``tiny-models/reasonr``) is taken as a path, not as a Hub id.

    >>> check_model_reference("Qwen/Qwen2.5-VL-3B-Instruct", "--policy")
    >>> check_model_reference("/path/that/does/not/exist", "reasoner_model")
    Traceback (most recent call last):
    ...
    ValueError: reasoner_model: /path/that/does/not/exist is neither a local model folder nor a Hub id (no such folder)
    """
    if not value:
        return
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{argument}: {value} is a folder without a config.json, not a model checkpoint")
        return
    if path.exists():
        raise ValueError(
            f"{argument}: {value} is a file; give the model's folder (the one holding config.json)"
        )
    first = Path(value.split("/", 1)[0])
    looks_local = value.startswith(("/", ".", "~")) or (value.count("/") == 1 and first.is_dir())
    if looks_local or not _is_hub_id(value):
        raise ValueError(f"{argument}: {value} is neither a local model folder nor a Hub id (no such folder)")


def _is_hub_id(value: str) -> bool:
    """``value`` has the form of a Hub repository id (huggingface_hub's own rule)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def check_file(value: str | None, argument: str) -> None:
    """``value``, when given, must be an existing file; one line naming ``argument`` otherwise."""
    if value and not Path(value).is_file():
        raise ValueError(f"{argument}: {value} does not exist")
