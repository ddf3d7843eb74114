"""Argument and input checks shared by mmeff's backbones (one message per kind of mistake).

:class:`~mmeff.models.backbones.base.PyramidBackbone` applies them to every hierarchical backbone;
the isotropic ViTs and the MMPretrain wrappers call them directly.
"""
from types import MappingProxyType
from typing import Hashable, List, Mapping, Sequence, Tuple, Union

import torch


def read_only(archs: Mapping[Hashable, Mapping]) -> Mapping[Hashable, Mapping]:
    """A size table whose entries cannot be changed (no factory can alter another model's size)."""
    return MappingProxyType({name: MappingProxyType(dict(size)) for name, size in archs.items()})


def resolve_arch(arch: Union[Hashable, Mapping], archs: Mapping[Hashable, Mapping], model: str = '',
                 key: str = 'arch') -> dict:
    """A copy of the named size from ``archs``, or of a custom ``arch`` dict with the same keys.

    ``model`` and ``key`` (the constructor argument, e.g. ``'depth'``) only name things in the error.
    """
    prefix = f'{model} ' if model else ''
    if isinstance(arch, Mapping):
        required = set(next(iter(archs.values())))
        if set(arch) != required:
            raise KeyError(f'{prefix}a custom {key} needs exactly the keys {sorted(required)}, got {sorted(arch)}')
        return dict(arch)
    if arch not in archs:
        raise KeyError(f'{prefix}{key} must be one of {", ".join(str(name) for name in archs)} '
                       f'or a dict with the same keys, got {arch!r}')
    return dict(archs[arch])


def check_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int, model: str) -> Tuple[int, ...]:
    """``out_indices`` as a sorted tuple of stage indices, the order in which the stages return their
    maps (negative indices count from the last stage)."""
    given = (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)
    resolved = tuple(i + num_stages if -num_stages <= i < 0 else i for i in given)
    if not resolved or any(not 0 <= i < num_stages for i in resolved):
        raise ValueError(f'{model} out_indices must index its {num_stages} stages 0..{num_stages - 1} '
                         f'(or -{num_stages}..-1 from the last), got {given}')
    return tuple(sorted(set(resolved)))


def check_input_size(x: torch.Tensor, model: str, multiple: int = 1, min_size: int = 1) -> None:
    """Raise a ValueError naming the valid sizes if ``x`` (B, C, H, W) is not one of them."""
    H, W = x.shape[-2:]
    if H % multiple or W % multiple or H < min_size or W < min_size:
        valid = f'multiples of {multiple} and ' if multiple > 1 else ''
        raise ValueError(f'{model} takes inputs whose height and width are {valid}at least '
                         f'{max(min_size, multiple)} px (e.g. 224), got {H}x{W}; resize or pad the image')


def check_divisible(size: Tuple[int, int], patch_size: int) -> Tuple[int, int]:
    """The patch grid of an image ``size``; a clear error when the patches don't tile it."""
    for side in size:
        if side % patch_size:
            lower = side // patch_size * patch_size
            raise ValueError(f'image size {side} is not divisible by patch_size={patch_size}; '
                             f'valid sizes are multiples of {patch_size}, the nearest are '
                             f'{lower} and {lower + patch_size}')
    return size[0] // patch_size, size[1] // patch_size


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """Stochastic depth rising linearly from 0 to ``drop_path_rate`` over the blocks (computed
    without tensors, so that a model builds on the meta device)."""
    return [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def stage_drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> List[List[float]]:
    """:func:`drop_path_rates` over all ``sum(depths)`` blocks, split per stage."""
    rates = drop_path_rates(drop_path_rate, sum(depths))
    ends = [sum(depths[:i + 1]) for i in range(len(depths))]
    return [rates[end - depth:end] for end, depth in zip(ends, depths)]
