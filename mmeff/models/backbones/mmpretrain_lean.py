"""MMPretrain 1.2's Swin, Swin V2, MLP-Mixer and XCiT without their per-call overheads.

mmeff builds these models from MMPretrain as they are (same arguments, weights, state dicts and outputs),
but three pieces of MMPretrain/mmcv code cost time on every forward without changing the function, so that
on a CPU the models trailed their timm twins (measurements: docs/results/timm_twins.md):

- ``ShiftWindowMSA`` rebuilds the shifted-window mask (a Python loop over 9 regions) in every block on every
  call;
- mmcv's ``FFN.forward`` is wrapped in a deprecated-argument shim that inspects its signature on every call;
- ``PatchMerging`` (mmcv's in Swin, MMPretrain's in Swin V2) gathers the 2x2 cells with ``nn.Unfold`` into a
  channel-major order: im2col plus transposes.

:func:`make_lean` removes them from a built model: the mask of the last map size is kept, the FFN runs its own
forward, and the merging gathers cells in timm's cheap order with its weights permuted to match (outputs equal
to float rounding). The backbones below apply it after MMPretrain's constructor and keep mmeff's backbone
contract where MMPretrain's forward allows it (:class:`LeanOnInit`); nothing else differs.
"""
import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN
from mmcv.cnn.bricks.transformer import PatchMerging as MMCVPatchMerging
from mmpretrain.models.backbones import MlpMixer, SwinTransformer, XCiT
from mmpretrain.models.utils import PatchMerging, ShiftWindowMSA
from torch import nn

from mmeff.registry import register_backbone

from ..layers.pyramid import check_out_indices, resolve_arch


def unfold_merge_order(channels: int) -> torch.Tensor:
    """Index that reorders timm's 2x2 patch-merging channels into MMPretrain's.

    Both concatenate the 4 pixels of each 2x2 cell, but timm stacks them pixel-major
    (index = (2 * col + row) * C + c) while MMPretrain's ``nn.Unfold`` is channel-major
    (index = 4 * c + 2 * row + col). ``merged_mm = merged_timm[..., order]``.
    """
    c, row, col = torch.meshgrid(torch.arange(channels), torch.arange(2), torch.arange(2), indexing='ij')
    return ((2 * col + row) * channels + c).flatten()


class CachedMaskShiftWindowMSA(ShiftWindowMSA):
    """``ShiftWindowMSA`` that keeps the attention mask of the last map size (a constant of the shape).

    Under tracing (ONNX export) the mask is built every call, so that the graph computes it from the input
    shape (mmdeploy rewrites ``get_attn_mask`` for dynamic shapes) instead of baking in a cached tensor.
    """

    def get_attn_mask(self, hw_shape: Tuple[int, int], window_size: int, shift_size: int,
                      device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
        if torch.jit.is_tracing():
            return super().get_attn_mask(hw_shape, window_size, shift_size, device)
        key = (tuple(hw_shape), window_size, shift_size, device)
        cached = self.__dict__.get('_cached_mask')
        if cached is None or cached[0] != key:
            cached = (key, super().get_attn_mask(hw_shape, window_size, shift_size, device))
            self.__dict__['_cached_mask'] = cached  # not a buffer: never saved, rebuilt for a new size or device
        return cached[1]


class UncheckedFFN(FFN):
    """mmcv's ``FFN`` called without its deprecated-argument shim (which only renames ``residual=``)."""
    forward = FFN.forward.__wrapped__


class CellMergingForward:
    """Forward of a 2x2 patch merging that gathers each cell pixel-major, with one copy of the channel-last
    map, and permutes the norm and reduction weights to match instead of the activations (``nn.Unfold``'s
    channel-major order is what the weights were trained in). Where the map has fewer elements than the
    reduction weight (late stages at batch 1), the original unfold is cheaper and runs."""

    def forward(self, x: torch.Tensor, input_size: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        if x.numel() < self.reduction.weight.numel():
            return super().forward(x, input_size)
        B, L, C = x.shape
        H, W = input_size
        x = x.view(B, H, W, C)
        if self.adaptive_padding:
            x = self.adaptive_padding(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            H, W = x.shape[1:3]
        # (B, H/2 * W/2, 4C) in timm's order: (column, row, channel) within a cell
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, -1, 4 * C)
        to_unfold_order = self._to_unfold_order(C, x.device)
        reduction = self.reduction.weight[:, to_unfold_order]
        if getattr(self, 'use_post_norm', False):  # Swin V2: the norm is over the reduced channels
            x = self.norm(F.linear(x, reduction)) if self.norm else F.linear(x, reduction)
        else:
            if self.norm:
                norm = self.norm
                x = F.layer_norm(x, norm.normalized_shape, norm.weight[to_unfold_order],
                                 norm.bias[to_unfold_order], norm.eps)
            x = F.linear(x, reduction)
        return x, (H // 2, W // 2)

    def _to_unfold_order(self, channels: int, device: torch.device) -> torch.Tensor:
        """Index i of timm's cell order -> position of the same value in nn.Unfold's order."""
        cached = self.__dict__.get('_cached_unfold_order')
        if cached is None or cached.numel() != 4 * channels or cached.device != device:
            cached = torch.argsort(unfold_merge_order(channels)).to(device)
            self.__dict__['_cached_unfold_order'] = cached
        return cached


class CellPatchMerging(CellMergingForward, MMCVPatchMerging):
    """mmcv's ``PatchMerging`` (Swin) with :class:`CellMergingForward`."""


class CellPatchMergingV2(CellMergingForward, PatchMerging):
    """MMPretrain's ``PatchMerging`` (Swin V2, post-norm) with :class:`CellMergingForward`."""


def _merges_2x2_cells(merging: nn.Module) -> bool:
    """Whether a patch merging pads to whole 2x2 cells and merges them without overlap, through a LayerNorm."""
    unfold = merging.sampler
    return (merging.adaptive_padding is not None and unfold.kernel_size == unfold.stride == (2, 2)
            and unfold.padding == (0, 0) and unfold.dilation == (1, 1) and merging.reduction.bias is None
            and (merging.norm is None or (type(merging.norm) is nn.LayerNorm and merging.norm.elementwise_affine)))


LEAN_MERGINGS = {MMCVPatchMerging: CellPatchMerging, PatchMerging: CellPatchMergingV2}


def make_lean(model: nn.Module) -> nn.Module:
    """Remove the per-call overheads listed in the module docstring from every layer of ``model``, in place.

    The layers keep their parameters, buffers and outputs: the classes of the exact MMPretrain/mmcv types are
    swapped for the subclasses above, which add no parameters or buffers (only caches of constants).
    """
    for module in model.modules():
        if type(module) is ShiftWindowMSA:
            module.__class__ = CachedMaskShiftWindowMSA
        elif type(module) is FFN:
            module.__class__ = UncheckedFFN
        elif type(module) in LEAN_MERGINGS and _merges_2x2_cells(module):
            module.__class__ = LEAN_MERGINGS[type(module)]
    return model


class LeanOnInit:
    """Mixin for an MMPretrain backbone class: build it as MMPretrain does, then apply :func:`make_lean`.

    It also gives the model mmeff's backbone contract (``base.PyramidBackbone``) where that needs no change
    to MMPretrain's forward: the size name and ``out_indices`` are checked before MMPretrain builds, with
    mmeff's errors (MMPretrain asserts, or for Swin silently returns nothing for a negative index: here
    negative indices count from the last stage); ``out_channels`` / ``out_strides`` describe the outputs
    (stride None where an output is not a map); ``train()`` returns the module, nn.Module's contract
    (MMPretrain's Swin and XCiT return None), so that ``model.eval()`` chains.

    A class says how many outputs it indexes (``_num_outputs``) and what they are (``_output_features``).
    """

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(super().__init__).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        num_stages = self._num_outputs(arguments)
        out_indices = check_out_indices(arguments['out_indices'], num_stages, type(self).__name__)
        arguments['out_indices'] = self._mmpretrain_out_indices(out_indices, num_stages)
        super().__init__(*bound.args, **bound.kwargs)
        make_lean(self)
        self.num_stages = num_stages
        self.out_channels, self.out_strides = self._output_features(arguments)

    @classmethod
    def _arch(cls, arguments: Dict[str, Any]) -> dict:
        """The size the ``arch`` argument names in MMPretrain's table (lower case, as MMPretrain reads it)."""
        arch = arguments['arch']
        return resolve_arch(arch.lower() if isinstance(arch, str) else arch, cls.arch_zoo, cls.__name__)

    @classmethod
    def _num_outputs(cls, arguments: Dict[str, Any]) -> int:
        raise NotImplementedError

    def _output_features(self, arguments: Dict[str, Any]) -> Tuple[List[int], List[Optional[int]]]:
        raise NotImplementedError

    @staticmethod
    def _mmpretrain_out_indices(out_indices: Tuple[int, ...], num_stages: int) -> List[int]:
        """The checked indices as the MMPretrain class takes them."""
        return list(out_indices)

    def train(self, mode: bool = True):
        super().train(mode)
        return self


class LeanSwinOnInit(LeanOnInit):
    """:class:`LeanOnInit` for MMPretrain's Swin (V1 and V2): 4 stages at strides ``patch_size * 2**i``."""

    @classmethod
    def _num_outputs(cls, arguments: Dict[str, Any]) -> int:
        return len(cls._arch(arguments)['depths'])

    def _output_features(self, arguments: Dict[str, Any]) -> Tuple[List[int], List[Optional[int]]]:
        channels, strides = [], []
        for i in self.out_indices:
            if 'out_after_downsample' in arguments:  # V1: a stage ends with the merging into the next one
                merged = arguments['out_after_downsample'] and self.stages[i].downsample is not None
                channels.append(self.num_features[i])
            else:  # V2: a stage starts with the merging
                merged = False
                channels.append(self.stages[i].out_channels)
            strides.append(arguments['patch_size'] * 2**(i + merged))
        return channels, strides


@register_backbone
class LeanSwinTransformer(LeanSwinOnInit, SwinTransformer):
    """MMPretrain's ``SwinTransformer`` (Liu et al., https://arxiv.org/abs/2103.14030), same arguments and
    weights, made lean."""


@register_backbone
class LeanMlpMixer(LeanOnInit, MlpMixer):
    """MMPretrain's ``MlpMixer`` (Tolstikhin et al., https://arxiv.org/abs/2105.01601), same arguments and
    weights, made lean. Its outputs are token sequences [B, C, N] (no stride)."""

    @classmethod
    def _num_outputs(cls, arguments: Dict[str, Any]) -> int:
        return cls._arch(arguments)['num_layers']

    @staticmethod
    def _mmpretrain_out_indices(out_indices: Tuple[int, ...], num_stages: int) -> List[int]:
        # MMPretrain 1.2's MlpMixer rejects every index >= 0 (its check is inverted): pass them from the end
        return [i - num_stages for i in out_indices]

    def _output_features(self, arguments: Dict[str, Any]) -> Tuple[List[int], List[Optional[int]]]:
        return [self.embed_dims] * len(self.out_indices), [None] * len(self.out_indices)


@register_backbone
class LeanXCiT(LeanOnInit, XCiT):
    """MMPretrain's ``XCiT`` (El-Nouby et al., https://arxiv.org/abs/2106.09681), same arguments and weights,
    made lean (its blocks' mmcv FFNs). ``out_indices`` index its ``depth + cls_attn_layers`` layers; only
    ``out_type='featmap'`` gives maps (stride ``patch_size``)."""

    @classmethod
    def _num_outputs(cls, arguments: Dict[str, Any]) -> int:
        return arguments['depth'] + arguments['cls_attn_layers']

    def _output_features(self, arguments: Dict[str, Any]) -> Tuple[List[int], List[Optional[int]]]:
        stride = arguments['patch_size'] if self.out_type == 'featmap' else None
        return [self.embed_dims] * len(self.out_indices), [stride] * len(self.out_indices)
