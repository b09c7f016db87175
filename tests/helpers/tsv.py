"""Benchmark TSVs as VLMEvalKit writes them: images as base64 PNGs."""

import base64
import io


def b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()
