"""The reasoner's requests sent as soon as the captions exist (CROTrainer's overlap seam,
`reasoner_overlap`) change nothing but when they run: the same seeds give the same audit records,
rewards and trained weights as asking in the reward call. The reasoner is the reader served by a
real vLLM OpenAI-compatible server (CPU); the run is the colour task's, 3 steps."""

import pytest
import torch
from safetensors.torch import load_file

from helpers import audit, served_colour_run

pytestmark = pytest.mark.slow


def test_overlapped_requests_score_as_the_sequential_path(
    colour_models, colour_data, reader_server, tmp_path
):
    runs = {}
    for overlap in ("true", "false"):
        out = tmp_path / f"overlap-{overlap}"
        steps = served_colour_run(
            colour_models, colour_data, reader_server, out, "--max_steps", "3", "--reasoner_overlap", overlap
        )
        runs[overlap] = (steps, audit(out), load_file(out / "model.safetensors"))
    (overlapped, records, weights), (sequential, expected, expected_weights) = runs["true"], runs["false"]

    assert [h["caption_reasoner/sent_ahead"] for h in overlapped] == [1.0] * 3, "the requests were sent ahead"
    assert [h["caption_reasoner/sent_ahead"] for h in sequential] == [0.0] * 3
    assert len(records) == 3 * 32 and records == expected, "the same answers, scores and rewards per caption"
    assert len({r["reward"] for r in records}) > 1, "rewards that differ from caption to caption"
    assert [h["reward"] for h in overlapped] == [h["reward"] for h in sequential]
    assert all(torch.equal(weights[k], expected_weights[k]) for k in expected_weights), "the same training"
