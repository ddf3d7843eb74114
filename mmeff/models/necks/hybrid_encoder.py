"""RT-DETR's efficient hybrid encoder: input projection, AIFI on S5, then CCFF.

Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069, Sec. 4.2.
"""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch import Tensor

from mmeff.registry import DET_MODELS

from .aifi import AIFI
from .ccff import CCFF

_RESNET_S345 = (512, 1024, 2048)


@DET_MODELS.register_module()
class HybridEncoder(BaseModule):
    """Efficient hybrid encoder of RT-DETR, as an mmdet neck.

    https://arxiv.org/abs/2304.08069, Sec. 4.2 and Fig. 3. Each input level is projected to
    ``hidden_dim`` channels (1x1 conv + BN), :class:`AIFI` runs on the ``use_encoder_idx`` levels
    (S5 by default), then :class:`CCFF` fuses all levels. Input: the backbone's tuple of NCHW
    maps; output: a tuple of as many maps with ``hidden_dim`` channels.

    The sizes of each official model are the named variants in ``arch_settings`` (derived from
    the official checkpoints): ``dict(type='HybridEncoder', arch='r18')``. A size argument that is
    not ``None`` overrides the variant's value, e.g. ``in_channels`` for another backbone.

    Args:
        arch: size variant: 'r18', 'r34', 'r50', 'r50m', 'r101', 'l', 'x' or 'h'.
        in_channels: channels of each input level.
        hidden_dim: channels of the encoder (every output level).
        dim_feedforward: FFN width of AIFI.
        expansion: hidden width of the CCFF fusion blocks relative to ``hidden_dim``.
        depth_mult: CCFF fusion blocks have ``round(3 * depth_mult)`` RepVGG blocks.
        num_encoder_layers: AIFI layers per processed level.
        nhead: AIFI attention heads.
        dropout: AIFI dropout.
        enc_act_cfg: AIFI FFN activation.
        use_encoder_idx: levels AIFI processes (``[]`` for CCFF only, e.g. the ablation).
        pe_temperature: temperature of AIFI's position embedding.
        norm_cfg: normalization of the projections and CCFF.
        act_cfg: activation of CCFF.
    """
    arch_settings = {
        'r18': dict(in_channels=(128, 256, 512), hidden_dim=256, dim_feedforward=1024,
                    expansion=0.5, depth_mult=1.0, num_encoder_layers=1),
        'r34': dict(in_channels=(128, 256, 512), hidden_dim=256, dim_feedforward=1024,
                    expansion=0.5, depth_mult=1.0, num_encoder_layers=1),
        'r50': dict(in_channels=_RESNET_S345, hidden_dim=256, dim_feedforward=1024,
                    expansion=1.0, depth_mult=1.0, num_encoder_layers=1),
        'r50m': dict(in_channels=_RESNET_S345, hidden_dim=256, dim_feedforward=1024,
                     expansion=0.5, depth_mult=1.0, num_encoder_layers=1),
        'r101': dict(in_channels=_RESNET_S345, hidden_dim=384, dim_feedforward=2048,
                     expansion=1.0, depth_mult=1.0, num_encoder_layers=1),
        'l': dict(in_channels=_RESNET_S345, hidden_dim=256, dim_feedforward=1024,
                  expansion=1.0, depth_mult=1.0, num_encoder_layers=1),
        'x': dict(in_channels=_RESNET_S345, hidden_dim=384, dim_feedforward=2048,
                  expansion=1.0, depth_mult=1.0, num_encoder_layers=1),
        'h': dict(in_channels=_RESNET_S345, hidden_dim=512, dim_feedforward=2048,
                  expansion=1.0, depth_mult=1.0, num_encoder_layers=2),
    }

    def __init__(self,
                 arch: str = 'r50',
                 in_channels: Optional[Sequence[int]] = None,
                 hidden_dim: Optional[int] = None,
                 dim_feedforward: Optional[int] = None,
                 expansion: Optional[float] = None,
                 depth_mult: Optional[float] = None,
                 num_encoder_layers: Optional[int] = None,
                 nhead: int = 8,
                 dropout: float = 0.0,
                 enc_act_cfg: ConfigType = dict(type='GELU'),
                 use_encoder_idx: Sequence[int] = (2, ),
                 pe_temperature: float = 10000.,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if arch not in self.arch_settings:
            raise KeyError(f'HybridEncoder arch must be one of {sorted(self.arch_settings)}, '
                           f'got {arch!r}')
        overrides = dict(in_channels=in_channels, hidden_dim=hidden_dim,
                         dim_feedforward=dim_feedforward, expansion=expansion,
                         depth_mult=depth_mult, num_encoder_layers=num_encoder_layers)
        sizes = {k: v if overrides[k] is None else overrides[k]
                 for k, v in self.arch_settings[arch].items()}
        self.in_channels = tuple(sizes['in_channels'])
        self.hidden_dim = sizes['hidden_dim']
        assert all(0 <= i < len(self.in_channels) for i in use_encoder_idx), (
            f'use_encoder_idx {list(use_encoder_idx)} must index the {len(self.in_channels)} '
            f'input levels given by in_channels={self.in_channels}')

        self.input_proj = nn.ModuleList([
            ConvModule(c, self.hidden_dim, 1, norm_cfg=norm_cfg, act_cfg=None)
            for c in self.in_channels
        ])
        self.aifi = AIFI(self.hidden_dim, nhead, sizes['dim_feedforward'], dropout, enc_act_cfg,
                         use_encoder_idx, sizes['num_encoder_layers'], pe_temperature)
        self.ccff = CCFF(self.hidden_dim, len(self.in_channels), sizes['expansion'],
                         sizes['depth_mult'], norm_cfg, act_cfg)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        assert len(inputs) == len(self.in_channels), (
            f'HybridEncoder was built for {len(self.in_channels)} levels (in_channels='
            f'{self.in_channels}) but got {len(inputs)}; check the backbone out_indices')
        feats = [proj(x) for proj, x in zip(self.input_proj, inputs)]
        return self.ccff(self.aifi(feats))

    def switch_to_deploy(self) -> None:
        """Fuse every RepVGG block into a single 3x3 conv (outputs unchanged)."""
        self.ccff.switch_to_deploy()
