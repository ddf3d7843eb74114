"""The simple feature pyramid of ViTDet (Li et al., *Exploring Plain Vision Transformer Backbones for
Object Detection*, ECCV 2022, https://arxiv.org/abs/2203.16527).

A plain ViT has one map at stride 16. ViTDet builds the multi-scale maps a detector needs from that
last map alone, without an FPN's top-down/lateral path: stride 8 and 4 by 2x2 stride-2
deconvolutions, stride 16 as is, stride 32 by 2x2 stride-2 max pooling; every level then gets a 1x1
and a 3x3 convolution, each with a norm (the paper's LayerNorm over channels). mmdet 3.3 has it only in
its uninstalled ``projects/ViTDet`` and MMPretrain not at all, hence this module.
"""
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.models.utils import build_norm_layer
from torch import nn

from mmeff.registry import DET_MODELS

SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)


class ConvNorm(nn.Sequential):
    """Convolution without bias (the norm has one), then a norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm_cfg: dict):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            build_norm_layer(norm_cfg, out_channels))


@DET_MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid on the last map of a plain ViT.

    Args:
        in_channels: channels of the backbone map (the ViT's ``embed_dim``).
        out_channels: channels of every output level.
        scale_factors: the levels to build, relative to the input map, from ``(4.0, 2.0, 1.0, 0.5)``;
            with a stride-16 ViT, ``(2.0, 1.0, 0.5)`` gives strides 8, 16, 32 (RT-DETR's S3-S5).
        num_extra_levels: levels added after the last one, each by stride-2 subsampling (max pooling
            with a 1x1 kernel) of the level before, as detectron2's ``LastLevelMaxPool`` (for the
            strides 64 and 128 of RetinaNet / FCOS heads).
        norm_cfg: the norm after every deconvolution and convolution (MMPretrain's registry names;
            the paper's ``LN2d`` by default).
        in_index: which backbone output to use (the last by default).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (2.0, 1.0, 0.5),
                 num_extra_levels: int = 0,
                 norm_cfg: Mapping = MappingProxyType(dict(type='LN2d', eps=1e-6)),
                 in_index: int = -1,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        unknown = [s for s in scale_factors if s not in SCALE_FACTORS]
        if unknown or not scale_factors:
            raise ValueError(f'scale_factors must be a non-empty subset of {SCALE_FACTORS}, got {tuple(scale_factors)}')
        if num_extra_levels < 0:
            raise ValueError(f'num_extra_levels must be >= 0, got {num_extra_levels}')
        self.scale_factors = tuple(scale_factors)
        self.num_extra_levels = num_extra_levels
        self.in_index = in_index
        norm_cfg = dict(norm_cfg)
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            resample, channels = self._resample(scale, in_channels, norm_cfg)
            self.stages.append(nn.Sequential(
                resample,
                ConvNorm(channels, out_channels, 1, norm_cfg),  # lateral
                ConvNorm(out_channels, out_channels, 3, norm_cfg)))  # output

    @staticmethod
    def _resample(scale: float, channels: int, norm_cfg: dict) -> Tuple[nn.Module, int]:
        """The resampling of one level and its output channels (halved per deconvolution, as ViTDet)."""
        if scale == 4.0:
            return nn.Sequential(
                nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
                build_norm_layer(norm_cfg, channels // 2),
                nn.GELU(),
                nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)), channels // 4
        if scale == 2.0:
            return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), channels // 2
        if scale == 1.0:
            return nn.Identity(), channels
        return nn.MaxPool2d(2, stride=2), channels

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        x = inputs[self.in_index]  # B, C, H, W (stride 16 for a ViT/16)
        if x.dim() != 4:
            raise ValueError(f'SimpleFeaturePyramid takes an NCHW map, got a tensor of shape {tuple(x.shape)}; '
                             "for ViTWithMixer set out_type='featmap'")
        outs = [stage(x) for stage in self.stages]
        for _ in range(self.num_extra_levels):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
