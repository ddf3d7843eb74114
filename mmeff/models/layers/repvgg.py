"""RepVGG and CSP-Rep layers, the fusion blocks of RT-DETR's cross-scale fusion (CCFF).

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069 (Fig. 4, fusion block); RepVGG, Ding et al., CVPR 2021,
https://arxiv.org/abs/2101.03697 (structural re-parameterization).

Every conv-norm-act is mmcv's ``ConvModule`` (keys ``conv``/``bn``; the official checkpoints say
``conv``/``norm``, a one-word rename in the converter).
"""
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch import Tensor

from mmeff.registry import DET_MODELS

from .fuse import conv_bn_kernel, fused_conv, merge_branches
from .reparam import Reparameterizable


@DET_MODELS.register_module()
class RepVGGBlock(BaseModule, Reparameterizable):
    """RepVGG block as used by RT-DETR: ``act(BN(conv3x3(x)) + BN(conv1x1(x)))``.

    From RepVGG (https://arxiv.org/abs/2101.03697) as used in RT-DETR's fusion block
    (https://arxiv.org/abs/2304.08069). Written here because mmpretrain's ``RepVGGBlock`` adds an
    identity-BN branch whenever in and out channels match, which RT-DETR's block does not have.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm_cfg: normalization of both branches.
        act_cfg: activation applied after the two branches are summed.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1 = ConvModule(in_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None)
        self.conv2 = ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.act = build_activation_layer(act_cfg)

    @property
    def deployed(self) -> bool:
        return hasattr(self, 'conv')

    def forward(self, x: Tensor) -> Tensor:
        if self.deployed:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fuse both branches into a single 3x3 conv with bias; the outputs are unchanged."""
        if self.deployed:
            return
        # the 1x1 kernel becomes the centre tap of a 3x3 one
        kernel, bias = merge_branches([conv_bn_kernel(self.conv1), conv_bn_kernel(self.conv2)])
        self.conv = fused_conv(self.conv1.conv, kernel, bias)
        del self.conv1, self.conv2


@DET_MODELS.register_module()
class CSPRepLayer(BaseModule):
    """CSP layer with RepVGG blocks: RT-DETR's CCFF fusion block.

    ``conv3(blocks(conv1(x)) + conv2(x))``: two 1x1 convs split the input into two paths of
    ``int(out_channels * expansion)`` channels, ``num_blocks`` RepVGG blocks run on one, the paths
    are added element-wise and a 1x1 conv restores ``out_channels`` when ``expansion != 1``
    (https://arxiv.org/abs/2304.08069, Fig. 4). mmdet's ``CSPLayer`` concatenates the paths and
    uses plain bottlenecks, so it does not fit.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        num_blocks: number of RepVGG blocks (RT-DETR: ``round(3 * depth_mult)``).
        expansion: hidden width relative to ``out_channels``.
        norm_cfg: normalization of every conv.
        act_cfg: activation of every conv and RepVGG block (RT-DETR: SiLU).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 num_blocks: int = 3,
                 expansion: float = 1.0,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        assert num_blocks >= 1, f'CSPRepLayer needs num_blocks >= 1, got {num_blocks}'
        hidden_channels = int(out_channels * expansion)
        self.conv1 = ConvModule(in_channels, hidden_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = ConvModule(in_channels, hidden_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.bottlenecks = nn.Sequential(*[
            RepVGGBlock(hidden_channels, hidden_channels, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for _ in range(num_blocks)
        ])
        if hidden_channels == out_channels:
            self.conv3 = nn.Identity()
        else:
            self.conv3 = ConvModule(hidden_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))

