"""HGNetv2: the backbone of RT-DETR-L/X (and RT-DETRv2-H).

RT-DETR, Zhao et al., CVPR 2024, https://arxiv.org/abs/2304.08069 (L and X use HGNetv2);
HGNetv2 is PP-HGNetV2 from PaddleClas / PaddleDetection.

Module names mirror the official checkpoints (``stem.stem1``, ``stages.{i}.downsample``,
``stages.{i}.blocks.{j}.layers.{k}``, ``aggregation_squeeze_conv``); the only difference is that
the official 2x2 stem convs wrap their conv in a padding ``Sequential`` (``stem2a.conv.1``) where
here the padding is in ``forward``: see :mod:`mmeff.converters.rtdetr_official`.
"""
from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType
from torch import Tensor

from mmeff.registry import register_backbone

from .base import PyramidBackbone


class _Stem(nn.Module):
    """3x3/2 conv, then a 2x2-conv branch and a 2x2 max-pool branch concatenated, then 3x3/2, 1x1.

    Output stride 4. The 2x2 convs and the pool pad one pixel right and bottom to keep the size.
    """

    def __init__(self, mid_channels: int, out_channels: int, norm_cfg: ConfigType) -> None:
        super().__init__()
        self.stem1 = ConvModule(3, mid_channels, 3, 2, 1, norm_cfg=norm_cfg)
        self.stem2a = ConvModule(mid_channels, mid_channels // 2, 2, norm_cfg=norm_cfg)
        self.stem2b = ConvModule(mid_channels // 2, mid_channels, 2, norm_cfg=norm_cfg)
        self.stem3 = ConvModule(2 * mid_channels, mid_channels, 3, 2, 1, norm_cfg=norm_cfg)
        self.stem4 = ConvModule(mid_channels, out_channels, 1, norm_cfg=norm_cfg)
        self.pool = nn.MaxPool2d(2, 1)

    def forward(self, x: Tensor) -> Tensor:
        # Zero padding is neutral for the max-pool: its inputs are ReLU outputs (>= 0).
        x = F.pad(self.stem1(x), [0, 1, 0, 1])
        conv_branch = self.stem2b(F.pad(self.stem2a(x), [0, 1, 0, 1]))
        x = torch.cat([self.pool(x), conv_branch], dim=1)
        return self.stem4(self.stem3(x))


class _HGBlock(nn.Module):
    """``layer_num`` convs in sequence, all their outputs and the input concatenated, then a
    squeeze (1x1 to out/2) and excitation (1x1 to out) aggregation; residual when widths match.

    Light blocks replace each kxk conv by a 1x1 conv (no activation) and a depth-wise kxk conv.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, layer_num: int,
                 kernel_size: int, light_block: bool, residual: bool,
                 norm_cfg: ConfigType) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList()
        for i in range(layer_num):
            cin = in_channels if i == 0 else mid_channels
            if light_block:
                layer = nn.Sequential(
                    OrderedDict(
                        conv1=ConvModule(cin, mid_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                        conv2=ConvModule(mid_channels, mid_channels, kernel_size,
                                         padding=kernel_size // 2, groups=mid_channels,
                                         norm_cfg=norm_cfg)))
            else:
                layer = ConvModule(cin, mid_channels, kernel_size, padding=kernel_size // 2,
                                   norm_cfg=norm_cfg)
            self.layers.append(layer)
        total_channels = in_channels + layer_num * mid_channels
        self.aggregation_squeeze_conv = ConvModule(total_channels, out_channels // 2, 1,
                                                   norm_cfg=norm_cfg)
        self.aggregation_excitation_conv = ConvModule(out_channels // 2, out_channels, 1,
                                                      norm_cfg=norm_cfg)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        out = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outputs, 1)))
        return out + x if self.residual else out


class _HGStage(nn.Module):
    """Optional depth-wise 3x3/2 downsampling (no activation), then ``num_blocks`` HG blocks."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, num_blocks: int,
                 downsample: bool, light_block: bool, kernel_size: int, layer_num: int,
                 norm_cfg: ConfigType) -> None:
        super().__init__()
        if downsample:
            self.downsample = ConvModule(in_channels, in_channels, 3, 2, 1, groups=in_channels,
                                         norm_cfg=norm_cfg, act_cfg=None)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            _HGBlock(in_channels if i == 0 else out_channels, mid_channels, out_channels, layer_num,
                     kernel_size, light_block, residual=i > 0, norm_cfg=norm_cfg)
            for i in range(num_blocks)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


@register_backbone
class HGNetv2(PyramidBackbone):
    """HGNetv2 (PP-HGNetV2) backbone of RT-DETR-L/X, https://arxiv.org/abs/2304.08069.

    Not in mmdet or mmpretrain, so written here.

    Args:
        arch: 'L' (RT-DETR-L), 'X' (RT-DETR-X) or 'H' (RT-DETRv2-H); see ``arch_zoo``.
        out_indices: stages to return; (1, 2, 3) are S3, S4, S5 (strides 8, 16, 32).
        freeze_at: -1 nothing, 0 the stem (the paper's setting), k the stem and k stages.
        freeze_norm: replace every BatchNorm by a frozen one (the paper's setting: True).
        norm_cfg: BatchNorm config of the trainable norms.
    """
    # stem: (mid, out) channels; stages: (in, mid, out, num_blocks, downsample, light_block,
    # kernel_size, layer_num), each derived from the official checkpoints' shapes.
    arch_zoo = {
        'L': dict(stem_channels=(32, 48),
                  stages=((48, 48, 128, 1, False, False, 3, 6),
                          (128, 96, 512, 1, True, False, 3, 6),
                          (512, 192, 1024, 3, True, True, 5, 6),
                          (1024, 384, 2048, 1, True, True, 5, 6))),
        'X': dict(stem_channels=(32, 64),
                  stages=((64, 64, 128, 1, False, False, 3, 6),
                          (128, 128, 512, 2, True, False, 3, 6),
                          (512, 256, 1024, 5, True, True, 5, 6),
                          (1024, 512, 2048, 2, True, True, 5, 6))),
        'H': dict(stem_channels=(48, 96),
                  stages=((96, 96, 192, 2, False, False, 3, 6),
                          (192, 192, 512, 3, True, False, 3, 6),
                          (512, 384, 1024, 6, True, True, 5, 6),
                          (1024, 768, 2048, 3, True, True, 5, 6))),
    }

    def __init__(self,
                 arch: str = 'L',
                 out_indices: Sequence[int] = (1, 2, 3),
                 freeze_at: int = 0,
                 freeze_norm: bool = True,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        settings = self.resolve_arch(arch)
        stages = settings['stages']
        self.arch = arch
        self.set_out_indices(out_indices, num_stages=len(stages))
        self.stem = _Stem(*settings['stem_channels'], norm_cfg=norm_cfg)
        self.stages = nn.ModuleList([_HGStage(*stage, norm_cfg=norm_cfg) for stage in stages])
        self.set_stage_features([stage[2] for stage in stages], (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)
