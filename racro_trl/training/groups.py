"""Groups that teach nothing: the captions of one question that all scored the same.

GRPO's advantage is a caption's reward against its group's mean, so a group whose captions all scored
the same (all 0 or all 1 with one reasoner answer per caption) has advantage 0 everywhere. With
``beta: 0`` such rows add nothing to the policy gradient, yet they cost the training forward and
backward like any other. :func:`zero_variance_share` measures them (logged every step as
``caption_reasoner/zero_variance_groups``); :func:`informative_rows` and :func:`keep_rows` leave them out
of the training pass (``drop_zero_variance_groups``), as verl and EasyR1 filter them (DAPO's dynamic sampling, less
its refill; TRL has none: huggingface/trl#3708).

Exact for the token-sum losses (``dapo``, ``cispo``, ``vespo``): their normaliser is the generation
batch's token count, which TRL counts before the drop and keeps (``num_items_in_batch``), and a row of
advantage 0 contributes 0 to their sum. The per-sequence and per-slice means (``grpo``, ``bnpo``,
``dr_grpo``, ``sapo``, ``luspo``) would divide by fewer rows, so the option refuses them. With
``beta > 0`` the dropped rows' KL term is lost (tests/test_groups.py measures how much).
"""

from __future__ import annotations

EXACT_LOSS_TYPES = ("dapo", "cispo", "vespo")


def zero_variance_share(rewards: list[float], group_size: int) -> float | None:
    """The share of consecutive groups of ``group_size`` rewards that are all equal; None when the rewards
    do not split into whole groups.

    >>> zero_variance_share([1, 1, 0, 1, 0, 0, 1, 0], 2)
    0.5
    """
    if group_size < 1 or not rewards or len(rewards) % group_size:
        return None
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return sum(len(set(g)) == 1 for g in groups) / len(groups)


def informative_rows(advantages, multiple: int = 1):
    """The indices of the rows whose advantage is not 0, topped up with zero-advantage rows (in order) to
    a non-zero multiple of ``multiple``: TRL splits a generation batch into ``steps_per_generation`` equal
    slices and would drop a remainder.

    >>> import torch
    >>> informative_rows(torch.tensor([0.0, 0.7, 0.0, -0.7, 0.0, 0.0]), multiple=3).tolist()
    [0, 1, 3]
    """
    import torch

    zero = advantages == 0
    if advantages.dim() > 1:
        zero = zero.all(dim=-1)
    keep = (~zero).nonzero().flatten()
    wanted = max(multiple, -(-len(keep) // multiple) * multiple)
    if wanted > len(keep):
        filler = zero.nonzero().flatten()[: wanted - len(keep)]
        keep = torch.cat([keep, filler]).sort().values
    return keep


def keep_rows(batch: dict, rows) -> dict:
    """``batch`` (what ``GRPOTrainer._generate_and_score_completions`` returns) with only ``rows``:
    per-row tensors and lists are indexed, the images' patches follow their rows (TRL's own split by
    image grid), scalars such as ``num_items_in_batch`` stay as they are."""
    from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

    index = rows.tolist()
    split = split_pixel_values_by_grid(batch)
    kept = {}
    for key, value in split.items():
        if isinstance(value, list):
            kept[key] = [value[i] for i in index]
        elif hasattr(value, "dim") and value.dim() > 0:
            kept[key] = value[rows.to(value.device)]
        else:
            kept[key] = value
    return unsplit_pixel_values_by_grid(kept)
