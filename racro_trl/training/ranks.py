"""This process among the training processes: its index, and counts summed over all of them."""

from __future__ import annotations


def process_index() -> int:
    from accelerate import PartialState

    return PartialState().process_index


def sum_over_processes(*counts: int) -> tuple[int, ...]:
    """``counts`` summed over the training processes (every process calls this at the same point, so
    the collective is matched on all of them); as they are in a single process."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return counts
    import torch
    from accelerate.utils import reduce

    total = reduce(torch.tensor(counts, dtype=torch.float64, device=state.device), "sum")
    return tuple(int(x) for x in total.tolist())
