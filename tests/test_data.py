"""The training schema: the shipped sample, prompt building and clear errors on bad rows."""

import datasets
import pytest
from PIL import Image

from racro_trl.data.training_data import (
    build_sample_dataset,
    load_dataset_any,
    sample_rows,
    set_image_pixels,
    to_training_format,
)


def test_shipped_sample_is_the_generated_one(sample_data, tmp_path):
    shipped = load_dataset_any(str(sample_data))
    rebuilt = load_dataset_any(str(build_sample_dataset(tmp_path / "s")))
    assert len(shipped) == len(rebuilt) == 48
    assert shipped["question"] == rebuilt["question"] and shipped["answer"] == rebuilt["answer"]
    assert set(shipped["category"]) == {"counting", "color", "shape"}
    assert len(set(shipped["qid"])) == len(shipped)
    assert (sample_data / "train.parquet").stat().st_size < 2 * 1024 * 1024


def read_scene(image, size: int = 96) -> list[tuple[str, str]]:
    """The (shape, colour) items of a sample scene, read back from its pixels: each of the 3 x 3 cells
    holds one shape drawn inside a box inset by a sixth of the cell, or nothing."""
    from racro_trl.toy.drawing import COLORS

    by_rgb = {rgb: name for name, rgb in COLORS.items()}
    cell = size // 3
    pad = cell // 6
    items = []
    for c in range(9):
        x0, y0 = (c % 3) * cell + pad, (c // 3) * cell + pad
        x1, y1 = x0 + cell - 2 * pad, y0 + cell - 2 * pad
        colour = by_rgb.get(image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)))
        if colour is None:
            continue
        if image.getpixel((x0 + 2, y0 + 2)) in by_rgb:  # a square fills its box's corners
            items.append(("square", colour))
        elif image.getpixel((x0 + 2, y1 - 2)) in by_rgb:  # a triangle fills the bottom of its box
            items.append(("triangle", colour))
        else:
            items.append(("circle", colour))
    return items


def test_sample_answers_are_visible():
    """Every sample row's answer is what its image shows, read back from the pixels."""
    import re

    rows = sample_rows(48, seed=0)
    for row in rows:
        items, question, answer = read_scene(row["images"][0]), row["question"], row["answer"]
        if row["category"] == "counting":
            colour, shape = re.match(r"How many (\w+) (\w+)s are", question).groups()
            assert items.count((shape, colour)) == int(answer), row["qid"]
        elif row["category"] == "color":
            shape = re.search(r"What colour is the (\w+)\?", question).group(1)
            assert items == [(shape, answer)], row["qid"]
        else:
            options = dict(re.findall(r"^([ABC])\. (\w+)$", question, re.M))
            assert [shape for shape, _ in items] == [options[answer]], row["qid"]
    assert {row["category"] for row in rows} == {"counting", "color", "shape"}


def test_training_format_builds_prompts(sample_data):
    ds = to_training_format(load_dataset_any(str(sample_data)))
    row = ds[1]
    assert row["prompt"][0]["role"] == "system"
    blocks = row["prompt"][1]["content"]
    assert sum(b["type"] == "image" for b in blocks) == len(row["images"]) == 1
    assert isinstance(row["images"][0], Image.Image)
    assert {"question", "answer", "qid"} <= set(ds.column_names)


def test_single_image_column_and_qa_cot():
    img = Image.new("RGB", (32, 32))
    ds = datasets.Dataset.from_list([{"image": img, "question": "How many?", "answer": "2"}])
    out = to_training_format(ds, prompt_format="qa_cot")
    assert "image" not in out.column_names and len(out[0]["images"]) == 1
    assert out[0]["prompt"][1]["content"][-1]["text"].endswith("\\boxed{}.")


def test_missing_image_names_the_row():
    img = Image.new("RGB", (32, 32))
    ds = datasets.Dataset.from_list(
        [
            {"images": [img], "question": "q", "answer": "1", "qid": "a"},
            {"images": [], "question": "q", "answer": "1", "qid": "b"},
        ]
    )
    with pytest.raises(ValueError, match=r"row 1 \(qid b\) has no image"):
        to_training_format(ds)


def test_empty_answer_and_missing_columns():
    img = Image.new("RGB", (32, 32))
    with pytest.raises(ValueError, match="empty answer"):
        to_training_format(datasets.Dataset.from_list([{"images": [img], "question": "q", "answer": " "}]))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['answer'\].*expected columns"):
        to_training_format(datasets.Dataset.from_list([{"images": [img], "question": "q"}]))
    with pytest.raises(ValueError, match="prompt_format"):
        to_training_format(
            datasets.Dataset.from_list([{"images": [img], "question": "q", "answer": "1"}]), "chat"
        )


def test_missing_dataset_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset_any("./no/such/dataset")


def test_image_pixel_bounds(tiny_models):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models["policy"])
    img = Image.new("RGB", (200, 200), (255, 0, 0))
    before = processor.image_processor(images=[img], return_tensors="pt")["image_grid_thw"].prod().item()
    set_image_pixels(processor, 28 * 28, 56 * 56)
    after = processor.image_processor(images=[img], return_tensors="pt")["image_grid_thw"].prod().item()
    assert after < before and after * 14 * 14 <= 56 * 56
    with pytest.raises(ValueError, match="exceeds"):
        set_image_pixels(processor, 10_000, 100)
