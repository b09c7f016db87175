"""Benchmark TSVs as VLMEvalKit writes them: images as base64 PNGs."""

import base64
import csv
import io

from racro_trl.data.training_data import sample_rows


def b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


COLUMNS = ["index", "image", "question", "hint", "A", "B", "C", "answer", "category"]


def write_tsv(path, n=6, corrupt=True):
    """A benchmark TSV of ``n`` sample rows (shape questions as MCQs, options in columns); ``corrupt``: row 2's
    image is not base64."""
    rows = []
    for i, r in enumerate(sample_rows(n, seed=3)):
        row = {"index": str(100 + i), "image": b64(r["images"][0]), "question": r["question"], "hint": "",
               "A": "", "B": "", "C": "", "answer": r["answer"], "category": r["category"]}  # fmt: skip
        if r["category"] == "shape":  # an MCQ in VLMEvalKit's layout: options in columns
            question, *options = r["question"].split("\n")
            row["question"] = question
            for option in options[1:]:
                row[option[0]] = option[3:]
        rows.append(row)
    if corrupt:
        rows[1]["image"] = "this is not base64!!"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path
