"""Throughput of `racro prepare-data` on a synthetic ViRL39K-schema release (rows/s, 1 vs N processes).

python bench/prepare_data.py [--rows 2000] [--size 640x480]
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from racro_trl.data.prepare import PrepareOptions, prepare_virl39k


def make_release(root: Path, rows: int, size: tuple[int, int]) -> None:
    rng = random.Random(0)
    (root / "images").mkdir(parents=True)
    table = []
    for i in range(rows):
        source = "DeepScaleR" if i % 10 == 9 else rng.choice(["ViRL", "MMK12", "Geo170K"])
        images = []
        if source != "DeepScaleR":
            image = Image.new("RGB", size, (250, 250, 250))
            draw = ImageDraw.Draw(image)
            for _ in range(8):
                x, y = rng.randrange(size[0]), rng.randrange(size[1])
                draw.ellipse((x, y, x + 60, y + 60), fill=(rng.randrange(256), 40, 40))
            image.save(root / "images" / f"{i}.png")
            images = [f"images/{i}.png"]
        table.append(
            {"question": f"How many circles? ({i})", "answer": "8", "PassRate_32BTrained": 0.5, "PassRate_7BBase": 0.25,
             "category": "(GradeSchool) Counting", "source": source, "qid": f"q{i}", "image": images}
        )  # fmt: skip
    pq.write_table(pa.Table.from_pylist(table), root / "39Krelease.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--size", default="640x480", help="image size WxH")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "release"
        make_release(root, args.rows, size)
        rates = {}
        for procs in sorted({1, os.cpu_count() or 1}):
            start = time.perf_counter()
            dataset, summary = prepare_virl39k(
                root, Path(tmp) / f"out{procs}", PrepareOptions(num_proc=procs)
            )
            rates[procs] = args.rows / (time.perf_counter() - start)
            print(f"prepare-data, {procs} process(es): {args.rows} rows ({len(dataset)} out, {size[0]}x{size[1]} PNG, "
                  f"{summary.resized} resized) in {args.rows / rates[procs]:.1f}s = {rates[procs]:.0f} rows/s")  # fmt: skip
        if len(rates) > 1:
            print(f"ratio {max(rates)} procs / 1 proc: {rates[max(rates)] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
