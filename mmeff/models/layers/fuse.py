"""BatchNorm folding and branch merging, the maths of every re-parameterization in mmeff.

An eval-mode BatchNorm is a per-channel affine map, ``bn(x) = scale * x + shift``. It folds

- into the conv before it: ``bn(W * x + b) = (scale W) * x + (scale b + shift)`` (:func:`conv_bn_kernel`);
- into the linear layer or 1x1 conv after it: ``W (scale x + shift) + b = (W scale) x + (W shift + b)``
  (:func:`fold_affine_into`; 1x1 only, where the map commutes with the sum over input channels);
- alone, as a conv: the identity kernel scaled per channel (:func:`bn_kernel`), the identity branch of
  RepVGG/MobileOne blocks.

Parallel branches summed after their BNs merge into one conv: kernels centred in the largest size and
summed, biases summed (:func:`merge_branches`). Users: ``layers/repvgg.py``, ``layers/prepbn.py``,
``backbones/fastvit.py``, ``backbones/nextvit.py``. mmcv's ``fuse_conv_bn`` folds conv-BN pairs of a whole
module tree in place (used as it is where that is what a block needs); it does not merge branches or
give the kernels, hence these functions.
"""
from typing import Iterable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KernelBias = Tuple[Tensor, Tensor]


def bn_affine(bn: nn.Module) -> KernelBias:
    """(scale, shift) [C] of an eval-mode BatchNorm (or mmdet's ``FrozenBatchNorm2d``):
    ``bn(x) = scale * x + shift`` per channel."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return scale, bn.bias - bn.running_mean * scale


def conv_bn_kernel(conv: nn.Module, bn: Optional[nn.Module] = None) -> KernelBias:
    """(kernel, bias) of a conv followed by a BatchNorm; ``conv`` may be mmcv's ``ConvModule``
    (its ``conv`` and ``norm``), then ``bn`` is left out."""
    if bn is None:
        conv, bn = conv.conv, conv.norm
    scale, shift = bn_affine(bn)
    kernel = conv.weight * scale.reshape(-1, 1, 1, 1)
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return kernel, shift


def identity_kernel(channels: int, groups: int, kernel_size: int, like: Tensor) -> Tensor:
    """The kxk (grouped) conv kernel [C, C / groups, k, k] that maps a map to itself."""
    kernel = torch.zeros(channels, channels // groups, kernel_size, kernel_size, dtype=like.dtype,
                         device=like.device)
    kernel[torch.arange(channels), torch.arange(channels) % (channels // groups), kernel_size // 2,
           kernel_size // 2] = 1
    return kernel


def bn_kernel(bn: nn.Module, groups: int, kernel_size: int) -> KernelBias:
    """(kernel, bias) of a BatchNorm applied to the input itself (an identity branch) as a kxk conv."""
    scale, shift = bn_affine(bn)
    return identity_kernel(bn.num_features, groups, kernel_size, bn.weight) * scale.reshape(-1, 1, 1, 1), shift


def pad_kernel(kernel: Tensor, kernel_size: int) -> Tensor:
    """Centre a smaller (odd) kernel inside a ``kernel_size`` one: a 1x1 kernel is the centre tap of a 3x3."""
    pad = (kernel_size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


def merge_branches(branches: Iterable[KernelBias], kernel_size: Optional[int] = None) -> KernelBias:
    """(kernel, bias) of the sum of parallel conv branches with the same stride, their kernels centred
    in ``kernel_size`` (default: the largest; all 'same'-padded, so they stay aligned)."""
    branches = list(branches)
    size = kernel_size or max(kernel.shape[-1] for kernel, _ in branches)
    return sum(pad_kernel(k, size) for k, _ in branches), sum(b for _, b in branches)


def fused_conv(reference: nn.Conv2d, kernel: Tensor, bias: Tensor) -> nn.Conv2d:
    """A 'same'-padded conv with ``reference``'s stride and groups holding ``kernel`` and ``bias``."""
    conv = nn.Conv2d(reference.in_channels, kernel.shape[0], kernel.shape[-1], stride=reference.stride,
                     padding=kernel.shape[-1] // 2, groups=reference.groups, bias=True).to(kernel)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return conv


@torch.no_grad()
def fold_affine_into(layer: Union[nn.Linear, nn.Conv2d], scale: Tensor, shift: Tensor) -> None:
    """Make ``layer(x)`` compute ``layer(scale * x + shift)`` (per input channel) in place; linear
    layers and 1x1 convs only."""
    weight = layer.weight.flatten(1)  # out, in
    bias = weight @ shift
    if layer.bias is not None:
        bias = bias + layer.bias
    layer.weight.copy_((weight * scale).reshape(layer.weight.shape))
    layer.bias = nn.Parameter(bias)
