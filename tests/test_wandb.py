"""`report_to: [wandb]` in offline mode, with the real wandb package: metrics and the caption table."""

import json
import os
import struct

import pytest

from helpers import PYTHON, REPO, run_logged

wandb = pytest.importorskip("wandb")


def history_keys(run_file) -> tuple[int, set[str]]:
    """Rows and keys of the history records in an offline `.wandb` file (leveldb-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos = run_file.read_bytes(), 32768, 7  # 7-byte file header, then 32 KiB blocks
    rows, keys, record = 0, set(), b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        fragment, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        record = fragment if kind in (1, 2) else record + fragment
        if kind in (1, 4):  # a full record, or the last fragment of one
            parsed = pb.Record()
            parsed.ParseFromString(record)
            if parsed.WhichOneof("record_type") == "history":
                rows += 1
                keys |= {item.key or "/".join(item.nested_key) for item in parsed.history.item}
    return rows, keys


@pytest.mark.slow
def test_offline_run_holds_reward_metrics_and_caption_table(tiny_models, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    command = [
        PYTHON, "recipes/cro.py", "--config", "recipes/tiny/cro.yaml", "--max_steps", "2",
        "--model_name_or_path", str(tiny_models["policy"]), "--reasoner_model", str(tiny_models["reasoner"]),
        "--reasoner_backend", "transformers", "--output_dir", str(tmp_path / "run"),
        "--report_to", "wandb", "--caption_table_steps", "1", "--run_name", "racro-offline",
    ]  # fmt: skip
    code, log = run_logged(command, tmp_path / "run.log", timeout=600, env=env)
    assert code == 0, log[-5000:]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows, keys = history_keys(next(run_dir.glob("run-*.wandb")))
    assert rows >= 2
    for key in (
        "train/rewards/caption_reasoner/mean",
        "train/caption_reasoner/answer_extracted",
        "train/completions/mean_length",
        "train/loss",
        "caption_table/nrows",
    ):
        assert key in keys, key
    tables = sorted((run_dir / "files" / "media" / "table").glob("caption_table_*.table.json"))
    assert tables
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["step", "image", "question", "caption", "reasoner_answer", "gold", "score"]
    # every row carries its image (wandb 0.31 writes the cell as a media reference)
    assert table["data"] and all(row[1] is not None for row in table["data"])
    assert all(isinstance(row[3], str) and isinstance(row[6], float) for row in table["data"])


def test_log_completions_with_wandb_is_refused_with_the_fix():
    from racro_trl.training.configs import make_parser, validate_run

    s, t, _ = make_parser().parse_args_and_config(
        ["--config", str(REPO / "recipes/tiny/cro.yaml"), "--report_to", "wandb", "--log_completions", "true"]
    )
    with pytest.raises(ValueError, match="set log_completions: false"):
        validate_run(s, t, num_processes=1)
