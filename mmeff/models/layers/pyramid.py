"""Argument and input checks shared by the hierarchical (multi-stage) backbones."""
from typing import List, Sequence, Tuple

import torch


def check_out_indices(out_indices: Sequence[int], num_stages: int, model: str) -> Tuple[int, ...]:
    """Return ``out_indices`` as a tuple (negative indices count from the last stage)."""
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    resolved = tuple(i % num_stages if -num_stages <= i < 0 else i for i in out_indices)
    if not resolved or any(not 0 <= i < num_stages for i in resolved):
        raise ValueError(f'{model} out_indices must index its {num_stages} stages '
                         f'(0..{num_stages - 1}), got {tuple(out_indices)}')
    return resolved


def check_input_size(x: torch.Tensor, model: str, multiple: int = 1, min_size: int = 1) -> None:
    """Raise a ValueError naming the valid sizes if ``x`` (B, C, H, W) is not one of them."""
    H, W = x.shape[-2:]
    if H % multiple or W % multiple or H < min_size or W < min_size:
        valid = f'multiples of {multiple}' if multiple > 1 else 'sizes'
        raise ValueError(f'{model} takes inputs whose height and width are {valid} of at least '
                         f'{max(min_size, multiple)} px (e.g. 224), got {H}x{W}; resize or pad the image')


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """Stochastic depth rising linearly from 0 to ``drop_path_rate`` over the blocks (computed
    without tensors, so that a model builds on the meta device)."""
    return [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
