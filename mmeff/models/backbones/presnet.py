"""PResNet: the ResNet-vd backbone of RT-DETR-R18/R34/R50/R101.

RT-DETR, Zhao et al., CVPR 2024, https://arxiv.org/abs/2304.08069; ResNet-vd ("bag of tricks"),
He et al., CVPR 2019, https://arxiv.org/abs/1812.01187.

Module names mirror the official checkpoints (``conv1.conv1_1``, ``res_layers.{i}.blocks.{j}``,
``branch2a``, ``short``), except that mmcv's ``ConvModule`` names its norm ``bn`` where the
official code says ``norm``: see :mod:`mmeff.converters.rtdetr_official`.
"""
from collections import OrderedDict
from typing import Optional, Sequence

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType
from torch import Tensor

from mmeff.registry import register_backbone

from .base import PyramidBackbone


class _ResBlock(nn.Module):
    """Residual block: ``relu(residual(x) + shortcut(x))``; the shortcut is the identity unless the
    block changes width or resolution, then a projection (variant d when strided)."""
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: bool,
                 norm_cfg: ConfigType) -> None:
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            self.short = _projection_shortcut(in_channels, channels * self.expansion, stride,
                                              norm_cfg)
        self.relu = nn.ReLU(inplace=True)

    def residual(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut else self.short(x)
        return self.relu(self.residual(x) + identity)


class _BasicBlock(_ResBlock):
    """Two 3x3 convs (R18/R34)."""
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: bool,
                 norm_cfg: ConfigType) -> None:
        super().__init__(in_channels, channels, stride, shortcut, norm_cfg)
        self.branch2a = ConvModule(in_channels, channels, 3, stride, 1, norm_cfg=norm_cfg)
        self.branch2b = ConvModule(channels, channels, 3, 1, 1, norm_cfg=norm_cfg, act_cfg=None)

    def residual(self, x: Tensor) -> Tensor:
        return self.branch2b(self.branch2a(x))


class _Bottleneck(_ResBlock):
    """1x1 - 3x3 - 1x1 (R50/R101); variant d puts the stride on the 3x3 conv."""
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: bool,
                 norm_cfg: ConfigType) -> None:
        super().__init__(in_channels, channels, stride, shortcut, norm_cfg)
        self.branch2a = ConvModule(in_channels, channels, 1, norm_cfg=norm_cfg)
        self.branch2b = ConvModule(channels, channels, 3, stride, 1, norm_cfg=norm_cfg)
        self.branch2c = ConvModule(channels, channels * self.expansion, 1, norm_cfg=norm_cfg,
                                   act_cfg=None)

    def residual(self, x: Tensor) -> Tensor:
        return self.branch2c(self.branch2b(self.branch2a(x)))


def _projection_shortcut(in_channels: int, out_channels: int, stride: int,
                         norm_cfg: ConfigType) -> nn.Module:
    """1x1 conv shortcut; when strided, variant d averages 2x2 first instead of skipping pixels."""
    if stride == 1:
        return ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
    return nn.Sequential(
        OrderedDict(
            pool=nn.AvgPool2d(2, 2, ceil_mode=True),
            conv=ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)))


class _Stage(nn.Module):
    """One residual stage; the first block changes width (and resolution), the others keep it."""

    def __init__(self, block: type, in_channels: int, channels: int, num_blocks: int, stride: int,
                 norm_cfg: ConfigType) -> None:
        super().__init__()
        out_channels = channels * block.expansion
        self.blocks = nn.Sequential(*[
            block(in_channels if i == 0 else out_channels, channels, stride if i == 0 else 1,
                  shortcut=i > 0, norm_cfg=norm_cfg) for i in range(num_blocks)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


@register_backbone
class PResNet(PyramidBackbone):
    """ResNet-vd backbone of RT-DETR ("PResNet" in the official code).

    https://arxiv.org/abs/2304.08069 (backbone), https://arxiv.org/abs/1812.01187 (variant d).
    Stem: three 3x3 convs 32-32-64 (the first with stride 2) and a 3x3 max-pool; stages of basic
    blocks (R18/R34) or bottlenecks (R50/R101) whose strided shortcut is avg-pool 2x2 + 1x1 conv.
    mmdet's ``ResNetV1d`` fits the maths but not the checkpoint layout (names, and its first
    stage of R18/R34 has no projection shortcut), so PResNet is written here.

    Args:
        depth: 18, 34, 50 or 101; picks the block type and the paper's freezing from ``arch_zoo``.
        out_indices: stages to return; (1, 2, 3) are S3, S4, S5 (strides 8, 16, 32).
        freeze_at: -1 nothing, 0 the stem, k the stem and the first k stages. ``None``: the
            paper's setting (R50/R101: 0, R18/R34: -1).
        freeze_norm: replace every BatchNorm by a frozen one. ``None``: the paper's setting
            (R50/R101: True, R18/R34: False).
        norm_cfg: BatchNorm config of the trainable norms (e.g. ``dict(type='SyncBN')``).
    """
    # depth -> (block, blocks per stage, paper's freeze_at, paper's freeze_norm)
    arch_zoo = {
        18: dict(block=_BasicBlock, stage_blocks=(2, 2, 2, 2), freeze_at=-1, freeze_norm=False),
        34: dict(block=_BasicBlock, stage_blocks=(3, 4, 6, 3), freeze_at=-1, freeze_norm=False),
        50: dict(block=_Bottleneck, stage_blocks=(3, 4, 6, 3), freeze_at=0, freeze_norm=True),
        101: dict(block=_Bottleneck, stage_blocks=(3, 4, 23, 3), freeze_at=0, freeze_norm=True),
    }
    stem_channels = (32, 32, 64)
    stage_channels = (64, 128, 256, 512)

    def __init__(self,
                 depth: int = 50,
                 out_indices: Sequence[int] = (1, 2, 3),
                 freeze_at: Optional[int] = None,
                 freeze_norm: Optional[bool] = None,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(depth, key='depth')
        self.depth = depth
        self.set_out_indices(out_indices, num_stages=len(self.stage_channels))

        c1, c2, c3 = self.stem_channels
        self.conv1 = nn.Sequential(
            OrderedDict(
                conv1_1=ConvModule(3, c1, 3, 2, 1, norm_cfg=norm_cfg),
                conv1_2=ConvModule(c1, c2, 3, 1, 1, norm_cfg=norm_cfg),
                conv1_3=ConvModule(c2, c3, 3, 1, 1, norm_cfg=norm_cfg)))
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        block = arch['block']
        self.res_layers = nn.ModuleList()
        in_channels = c3
        for i, (channels, num_blocks) in enumerate(zip(self.stage_channels, arch['stage_blocks'])):
            self.res_layers.append(
                _Stage(block, in_channels, channels, num_blocks, 1 if i == 0 else 2, norm_cfg))
            in_channels = channels * block.expansion
        self.set_stage_features([c * block.expansion for c in self.stage_channels], (4, 8, 16, 32))
        self.freeze(arch['freeze_at'] if freeze_at is None else freeze_at,
                    arch['freeze_norm'] if freeze_norm is None else freeze_norm)

    # the official checkpoints name the stem ``conv1`` and the stages ``res_layers``
    @property
    def stem(self) -> nn.Module:
        return self.conv1

    @property
    def stages(self) -> nn.ModuleList:
        return self.res_layers

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))
