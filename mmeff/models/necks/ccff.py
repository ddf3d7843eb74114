"""CCFF: RT-DETR's CNN-based cross-scale feature fusion.

Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069, Sec. 4.2 and Fig. 4.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch import Tensor

from mmeff.registry import DET_MODELS

from ..layers.reparam import switch_to_deploy
from ..layers.repvgg import CSPRepLayer


@DET_MODELS.register_module()
class CCFF(BaseModule):
    """Cross-scale fusion: PAN-style top-down then bottom-up paths with CSP-Rep fusion blocks.

    https://arxiv.org/abs/2304.08069, Fig. 4. Top-down, from the coarsest level: a 1x1 lateral
    conv, nearest upsampling to the next finer level, concatenation and a ``CSPRepLayer``.
    Bottom-up: a 3x3/2 conv, concatenation with the top-down output of the next coarser level and
    another ``CSPRepLayer``. Returns as many levels as it gets, finest first, each ``hidden_dim``
    channels. Upsampling goes to the finer map's exact size, so sizes that are not multiples of
    the stride also work. mmdet's ``YOLOXPAFPN`` has this topology but a different fusion block
    (concatenation, plain bottlenecks) and an extra output conv, so it does not fit.

    Args:
        hidden_dim: channels of every input and output level (project inputs with
            :class:`HybridEncoder` when the backbone's widths differ).
        num_levels: number of input levels.
        expansion: hidden width of the fusion blocks relative to ``hidden_dim``.
        depth_mult: each fusion block has ``round(3 * depth_mult)`` RepVGG blocks.
        norm_cfg: normalization of every conv.
        act_cfg: activation of every conv (RT-DETR: SiLU).
    """

    def __init__(self,
                 hidden_dim: int = 256,
                 num_levels: int = 3,
                 expansion: float = 1.0,
                 depth_mult: float = 1.0,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        assert num_levels >= 2, f'CCFF fuses at least 2 levels, got num_levels={num_levels}'
        self.hidden_dim = hidden_dim
        self.num_levels = num_levels
        num_blocks = round(3 * depth_mult)

        def conv(kernel_size: int, stride: int) -> ConvModule:
            return ConvModule(hidden_dim, hidden_dim, kernel_size, stride, kernel_size // 2,
                              norm_cfg=norm_cfg, act_cfg=act_cfg)

        def fusion_block() -> CSPRepLayer:
            return CSPRepLayer(2 * hidden_dim, hidden_dim, num_blocks, expansion, norm_cfg, act_cfg)

        # index i of each list serves the i-th fusion step of its path
        self.lateral_convs = nn.ModuleList([conv(1, 1) for _ in range(num_levels - 1)])
        self.fpn_blocks = nn.ModuleList([fusion_block() for _ in range(num_levels - 1)])
        self.downsample_convs = nn.ModuleList([conv(3, 2) for _ in range(num_levels - 1)])
        self.pan_blocks = nn.ModuleList([fusion_block() for _ in range(num_levels - 1)])

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        assert len(inputs) == self.num_levels, \
            f'CCFF was built for num_levels={self.num_levels} but got {len(inputs)} levels'
        assert all(x.shape[1] == self.hidden_dim for x in inputs), (
            f'CCFF needs {self.hidden_dim} channels on every level, got '
            f'{[x.shape[1] for x in inputs]}; use HybridEncoder to project the backbone outputs')
        # Top-down. inner_outs[0] is always the coarsest map processed so far; the lateral conv's
        # output replaces it, as the bottom-up path fuses with the laterally convolved maps.
        inner_outs = [inputs[-1]]
        for i, (lateral_conv, fpn_block) in enumerate(zip(self.lateral_convs, self.fpn_blocks)):
            finer = inputs[-2 - i]
            coarse = lateral_conv(inner_outs[0])
            inner_outs[0] = coarse
            upsampled = F.interpolate(coarse, size=finer.shape[-2:], mode='nearest')
            inner_outs.insert(0, fpn_block(torch.cat([upsampled, finer], dim=1)))
        # Bottom-up, from the finest top-down output.
        outs = [inner_outs[0]]
        for i, (downsample_conv, pan_block) in enumerate(zip(self.downsample_convs,
                                                              self.pan_blocks)):
            downsampled = downsample_conv(outs[-1])
            outs.append(pan_block(torch.cat([downsampled, inner_outs[i + 1]], dim=1)))
        return tuple(outs)

    def switch_to_deploy(self) -> None:
        """Fuse every RepVGG block into a single 3x3 conv (outputs unchanged)."""
        switch_to_deploy(self)
