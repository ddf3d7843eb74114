"""SwiftFormer: convolutional stages that end in a block with efficient additive attention.

Shaker et al., "SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile Vision
Applications", ICCV 2023, https://arxiv.org/abs/2303.15446.

What the model changes (Sec. 3): self-attention's N x N query-key product is replaced by *additive*
attention, linear in the number of tokens: the L2-normalised queries are pooled into one global query
with learned token weights (``alpha = norm_N(Q w_a / sqrt(d))``, ``q_g = sum_i alpha_i Q_i``), which
multiplies every key element-wise; a linear layer on the result plus the queries gives the output (no
value-key interaction). Each of the four stages is a stack of convolutional encoders (depth-wise 3x3,
BN, point-wise MLP) whose last block is a SwiftFormer encoder (local conv representation, additive
attention, MLP), so attention runs at every scale. Being linear, it takes any input size; the pyramid
needs multiples of 32.
"""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.utils import LayerScale

from mmeff.registry import register_backbone

from .base import PyramidBackbone, PyramidStage


def conv_bn(in_channels: int, out_channels: int, act: bool = False) -> ConvModule:
    """3x3 stride-2 conv (with bias) + BN (+ ReLU in the stem): the stem and the downsampling layers."""
    return ConvModule(in_channels, out_channels, 3, stride=2, padding=1, bias=True, norm_cfg=dict(type='BN'),
                      act_cfg=dict(type='ReLU') if act else None)


class ConvEncoder(nn.Module):
    """``x + ls * pw2(GELU(pw1(BN(dw3x3(x)))))`` on NCHW maps; with ``hidden_dim == dim`` it is the local
    representation of the SwiftFormer encoder. Its LayerScale starts at 1."""

    def __init__(self, dim: int, hidden_dim: int, drop_path: float = 0., layer_scale_init_value: float = 1.):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(hidden_dim, dim, 1)
        self.layer_scale = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.drop_path(self.layer_scale(out))


class EfficientAdditiveAttention(nn.Module):
    """Additive attention (Eq. 4-6 of the paper) over the H*W tokens of an NCHW map, O(N d)."""

    def __init__(self, dim: int, token_dim: int) -> None:
        super().__init__()
        self.scale = token_dim ** -0.5
        self.to_query = nn.Linear(dim, token_dim)
        self.to_key = nn.Linear(dim, token_dim)
        self.w_g = nn.Parameter(torch.randn(token_dim, 1))  # learned weight of each query in the global query
        self.proj = nn.Linear(token_dim, token_dim)
        self.final = nn.Linear(token_dim, token_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # B, N, C
        query = F.normalize(self.to_query(x), dim=-1)  # B, N, d
        key = F.normalize(self.to_key(x), dim=-1)
        alpha = F.normalize(query @ self.w_g * self.scale, dim=1)  # B, N, 1: token weights, L2-normalised over N
        global_query = (alpha * query).sum(dim=1, keepdim=True)  # B, 1, d
        out = self.final(self.proj(global_query * key) + query)  # B, N, d
        return out.transpose(1, 2).reshape(B, -1, H, W)


class Mlp(nn.Module):
    """BN, then a 1x1-conv MLP with GELU."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm1(x))))


class SwiftFormerEncoder(nn.Module):
    """Local representation, then ``x + ls1 * attn(x)`` and ``x + ls2 * mlp(x)``."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0., layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.local_representation = ConvEncoder(dim, dim)
        self.attn = EfficientAdditiveAttention(dim, dim)
        self.linear = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.layer_scale_2 = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        x = x + self.drop_path(self.layer_scale_1(self.attn(x)))
        return x + self.drop_path(self.layer_scale_2(self.linear(x)))


@register_backbone
class SwiftFormer(PyramidBackbone):
    """SwiftFormer backbone (https://arxiv.org/abs/2303.15446), 4 stages at strides 4, 8, 16, 32.

    Args:
        arch: 'xs', 's', 'l1', 'l3', or a dict with ``embed_dims`` (4) and ``depths`` (4).
        mlp_ratio: hidden width of the MLPs over the block width.
        out_indices: stages whose maps are returned (0..3); the last one goes through the final BatchNorm.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        layer_scale_init_value: initial LayerScale of the attention and MLP branches.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        'xs': dict(embed_dims=(48, 56, 112, 220), depths=(3, 3, 6, 4)),
        's': dict(embed_dims=(48, 64, 168, 224), depths=(3, 3, 9, 6)),
        'l1': dict(embed_dims=(48, 96, 192, 384), depths=(4, 3, 10, 5)),
        'l3': dict(embed_dims=(64, 128, 320, 512), depths=(4, 4, 12, 6)),
    }
    input_multiple = 32

    def __init__(self, arch: Union[str, dict] = 'xs', mlp_ratio: float = 4., out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0., layer_scale_init_value: float = 1e-5, freeze_at: int = -1,
                 freeze_norm: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        embed_dims, depths = arch['embed_dims'], arch['depths']
        self.set_out_indices(out_indices, num_stages=len(depths))

        self.stem = nn.Sequential(
            conv_bn(3, embed_dims[0] // 2, act=True), conv_bn(embed_dims[0] // 2, embed_dims[0], act=True))
        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.stages = nn.ModuleList()
        for i, (dim, block_dpr) in enumerate(zip(embed_dims, dpr)):
            # convolutional encoders, then one SwiftFormer encoder closing the stage
            blocks = [ConvEncoder(dim, int(dim * mlp_ratio), p) for p in block_dpr[:-1]]
            blocks.append(SwiftFormerEncoder(dim, mlp_ratio, block_dpr[-1], layer_scale_init_value))
            downsample = nn.Identity() if i == 0 else conv_bn(embed_dims[i - 1], dim)
            self.stages.append(PyramidStage(blocks, downsample))
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.set_stage_features(embed_dims, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def forward_out(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if i == self.num_stages - 1 else x  # B, C_i, H/2^(i+2), W/2^(i+2)
