"""The reward's audit trail: per optimizer step, a share of the captions it scored (and every leaked
or failed one up to as many again), one JSON line each, with a thumbnail of the prompt's image."""

from __future__ import annotations

import json
from pathlib import Path

from .ranks import process_index


class AuditWriter:
    """Appends audit records to ``<directory>/<name>-rank<r>.jsonl``, flushed per call: a crash loses
    at most the batch being scored.

    Args:
        directory: where the file and ``images/`` go.
        name: the reward's name.
        captions_per_step: records per optimizer step over all ranks (each rank writes its share, the
            first captions of its calls; leaked and failed captions get as many again); -1: all; 0: none.
    """

    def __init__(self, directory: str | Path, name: str, captions_per_step: int = -1):
        self.directory, self.name, self.captions_per_step = Path(directory), name, captions_per_step
        self.path: Path | None = None
        self._step, self._kept, self._flagged = None, 0, 0

    def write(self, records: list[dict], step: int | None, call: int, images: list | None = None) -> None:
        """Append this call's share of the step's records; a record names its prompt's first image,
        saved once as a thumbnail (:func:`racro_trl.reporting.viewer.save_thumbnail`), for the viewer."""
        if self.captions_per_step == 0:
            return
        from accelerate import PartialState

        if self.path is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.path = self.directory / f"{self.name}-rank{process_index()}.jsonl"
        if self._step != step:
            self._step, self._kept, self._flagged = step, 0, 0
        n = self.captions_per_step
        share = -(-n // PartialState().num_processes) if n > 0 else None
        kept = []
        for i, record in enumerate(records):
            if share is None or self._kept < share:
                self._kept += 1
            elif (record["leak"] or record["failed"]) and self._flagged < share:
                self._flagged += 1
            else:
                continue
            image = images[i] if images else None
            if image and not isinstance(image, str) and hasattr(image[0], "tobytes"):
                from ..reporting.viewer import save_thumbnail

                record = {**record, "image": save_thumbnail(image[0], self.directory)}
            kept.append({"step": step, "call": call, "rank": process_index(), "index": i, **record})
        if kept:
            with self.path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
