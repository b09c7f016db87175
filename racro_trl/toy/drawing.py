"""The synthetic tasks' drawing: colours, shapes and scenes (the sample data and the colour task)."""

from __future__ import annotations

import random

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(draw, shape: str, box: tuple[int, int, int, int], color) -> None:
    """``shape`` (one of SHAPES) filled with ``color`` inside ``box`` of a PIL ``ImageDraw``."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)


def scene(rng: random.Random, size: int, items: list[tuple[str, str]]):
    """An image with the given (shape, colour) items on a grid, so none overlap."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    cell = size // 3
    cells = rng.sample(range(9), len(items))
    for (shape, color), c in zip(items, cells, strict=True):
        x, y = (c % 3) * cell, (c // 3) * cell
        pad = cell // 6
        draw_shape(draw, shape, (x + pad, y + pad, x + cell - pad, y + cell - pad), COLORS[color])
    return image
