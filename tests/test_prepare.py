"""`racro prepare-data` on a synthetic release in the exact ViRL39K schema."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import PYTHON, racro, run_logged
from racro_trl.data.prepare import PrepareError, PrepareOptions, prepare_virl39k
from racro_trl.data.training_data import from_verl_format, load_dataset_any, to_training_format

MIN_PX, MAX_PX = 32 * 32, 96 * 96


def _image(root, name, size, fmt="PNG"):
    path = root / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path, fmt)
    return f"images/{name}"


def make_release(root, extra_rows=()):
    """A release: sources ViRL/MMK12/DeepScaleR, a multi-image row, a question holding <image>."""
    rows = []
    for i in range(12):
        source = ("ViRL", "MMK12", "DeepScaleR")[i % 3]
        images = [] if source == "DeepScaleR" else [_image(root, f"{i}.png", (64 + 8 * i, 48))]
        rows.append(
            {
                "question": f"How many items are there in figure {i}?",
                "answer": str(i),
                "PassRate_32BTrained": i / 12,
                "PassRate_7BBase": (i % 4) / 3,
                "category": ("(GradeSchool) Geometric", "(Science) Physics")[i % 2],
                "source": source,
                "qid": f"q{i}",
                "image": images,
            }
        )
    rows[0]["image"] = [_image(root, "a.jpg", (40, 40), "JPEG"), _image(root, "b.png", (200, 150))]
    rows[0]["question"] = "Compare <image> and <image>: which is larger?"
    rows[1]["question"] = "<image>What is the value of x?"
    rows[4]["image"] = [_image(root, "tiny.png", (8, 8))]  # below min pixels
    rows += list(extra_rows)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, root / "39Krelease.parquet")
    return root


def opts(**kwargs):
    return PrepareOptions(min_pixels=MIN_PX, max_pixels=MAX_PX, **kwargs)


def test_prepare_through_the_cli(tmp_path):
    src = make_release(tmp_path / "release")
    out = tmp_path / "prepared"
    result = racro(
        "prepare-data",
        "--src",
        str(src),
        "--out",
        str(out),
        "--min-pixels",
        str(MIN_PX),
        "--max-pixels",
        str(MAX_PX),
        "--num-proc",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropped (source DeepScaleR): 4" in result.stdout and "rows/s" in result.stdout
    ds = load_dataset_any(str(out))
    assert len(ds) == 8 and "DeepScaleR" not in set(ds["source"])
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert (
        summary["rows_in"] == 12
        and summary["rows_out"] == 8
        and summary["dropped"] == {"source DeepScaleR": 4}
    )
    assert list((out / "parquet").glob("*.parquet"))
    assert len(load_dataset_any(str(out / "parquet"))) == 8

    by_qid = {row["qid"]: row for row in ds}
    multi = by_qid["q0"]
    assert len(multi["images"]) == 2 and multi["question"].count("<image>") == 2
    assert [b["type"] for b in multi["prompt"][1]["content"]] == ["text", "image", "text", "image", "text"]
    assert by_qid["q1"]["question"] == "<image>What is the value of x?"
    assert by_qid["q3"]["question"].startswith("<image>How many")  # the tag is prefixed when missing
    # Every image is on the patch grid inside the bounds: a Qwen2.5-VL processor with these bounds
    # keeps it as it is (its patch grid is the image cut in 14-pixel squares), whatever its source size.
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=MIN_PX, max_pixels=MAX_PX, patch_size=14, merge_size=2)
    for row in ds:
        for image in row["images"]:
            assert MIN_PX <= image.width * image.height <= MAX_PX
            grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
            assert grid == [1, image.height // 14, image.width // 14], (image.size, grid)
    assert by_qid["q4"]["images"][0].width * by_qid["q4"]["images"][0].height >= MIN_PX


@pytest.mark.parametrize(
    ("break_it", "reason", "message"),
    [
        (
            lambda root, rows: rows[1].update(image=["images/nope.png"]),
            "missing image file",
            "does not exist",
        ),
        (
            lambda root, rows: (root / "images" / "1.png").write_bytes(b"not a png"),
            "unreadable image",
            "cannot identify",
        ),
        (lambda root, rows: rows[1].update(answer="  "), "empty answer", "empty answer"),
        (lambda root, rows: rows[4].update(qid="q1"), "duplicate qid", "duplicate qid"),
    ],
)
def test_bad_rows_fail_or_are_counted(tmp_path, break_it, reason, message):
    root = make_release(tmp_path / "r")
    rows = pq.read_table(root / "39Krelease.parquet").to_pylist()
    break_it(root, rows)
    pq.write_table(pa.Table.from_pylist(rows), root / "39Krelease.parquet")
    with pytest.raises(PrepareError, match=message):
        prepare_virl39k(root, tmp_path / "out1", opts())
    ds, summary = prepare_virl39k(root, tmp_path / "out2", opts(skip_bad=True))
    assert summary.dropped[reason] == 1 and len(ds) == 7
    assert summary.rows_in == summary.rows_out + sum(summary.dropped.values())


def test_wrong_columns_list_the_schema(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "1"}]), tmp_path / "39Krelease.parquet")
    with pytest.raises(
        PrepareError, match=r"lacks column\(s\).*PassRate_7BBase \(float\).*image \(list of image paths"
    ):
        prepare_virl39k(tmp_path, tmp_path / "out", opts())
    with pytest.raises(PrepareError, match="no 39Krelease.parquet"):
        prepare_virl39k(tmp_path / "nowhere", tmp_path / "out", opts())


def test_images_zip_is_extracted(tmp_path):
    import shutil

    root = make_release(tmp_path / "r")
    shutil.make_archive(str(root / "images"), "zip", root, "images")
    shutil.rmtree(root / "images")
    ds, _ = prepare_virl39k(root / "39Krelease.parquet", tmp_path / "out", opts(keep_sources=("ViRL",)))
    assert set(ds["source"]) == {"ViRL"} and len(ds) == 4


def test_filters_and_verl_format(tmp_path):
    from racro_trl.data.training_data import filter_dataset

    ds, _ = prepare_virl39k(make_release(tmp_path / "r"), tmp_path / "out", opts())
    ds = to_training_format(ds)
    kept = filter_dataset(
        ds, sources=["MMK12"], pass_rate_column="PassRate_7BBase", min_pass_rate=0.0, max_pass_rate=1.0
    )
    assert set(kept["source"]) == {"MMK12"} and all(0 < r < 1 for r in kept["PassRate_7BBase"])
    with pytest.raises(ValueError, match="no training rows left"):
        filter_dataset(ds, categories=["nope"])

    # the original RACRO caption parquet
    verl = datasets.Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "system", "content": "sys"},
                    {
                        "role": "user",
                        "content": "Question: <image>How many?\nPlease describe the image. DO NOT try to answer the question!",
                    },
                ],
                "images": [Image.new("RGB", (32, 32))],
                "reward_model": {"ground_truth": "3", "style": "rule"},
                "extra_info": {"index": 7, "split": "train"},
            }
        ]
    )
    row = from_verl_format(verl)[0]
    assert (row["question"], row["answer"], row["qid"]) == ("<image>How many?", "3", "7")
    trained = to_training_format(verl)
    assert (
        trained[0]["prompt"][1]["content"][1] == {"type": "image", "text": None}
        or trained[0]["prompt"][1]["content"][1]["type"] == "image"
    )


@pytest.mark.slow
def test_recipe_trains_one_step_on_prepared_data(tmp_path, tiny_models):
    out = tmp_path / "prepared"
    prepare_virl39k(make_release(tmp_path / "r"), out, opts())
    command = [
        PYTHON,
        "recipes/cro.py",
        "--config",
        "recipes/tiny/cro.yaml",
        "--dataset_name",
        str(out),
        "--model_name_or_path",
        str(tiny_models["policy"]),
        "--reasoner_model",
        str(tiny_models["reasoner"]),
        "--reasoner_backend",
        "transformers",
        "--max_steps",
        "1",
        "--output_dir",
        str(tmp_path / "run"),
        "--min_pass_rate=-1",
    ]  # fmt: skip
    code, log = run_logged(command, tmp_path / "run.log", timeout=600)
    assert code == 0, log[-5000:]
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and "loss" in state["log_history"][0]
