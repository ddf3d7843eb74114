"""EfficientFormerV2: a 4D (NCHW) hybrid of convolutional FFNs and attention in the last two stages.

Li et al., "Rethinking Vision Transformers for MobileNet Size and Speed", ICCV 2023,
https://arxiv.org/abs/2212.08059.

What the model changes (Sec. 3 of the paper): every block keeps the NCHW layout (no reshapes to tokens
between blocks); the FFN carries a depth-wise 3x3 conv (local mixing, which replaces the pooling mixer of
EfficientFormer V1); multi-head self-attention runs only in the last blocks of stages 3 and 4, with a
local value branch (depth-wise conv on V), talking heads and a learned relative position bias; in stage 3
it attends on a stride-2 copy of the map and upsamples the result; the stage-4 downsampling adds an
attention branch whose queries are a strided local+pooled summary of the map.

The position bias is learned for one input size (224 by default, ``img_size``). At other sizes the bias
table is resized bicubically to the key grid, as when fine-tuning at a new resolution; inputs must be
multiples of 32 (the stride of the last stage).
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.utils import LayerScale

from mmeff.registry import register_backbone

from ..layers.pyramid import check_divisible
from .base import PyramidBackbone, PyramidStage

BN = dict(type='BN')
GELU = dict(type='GELU')


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            act: bool = False) -> ConvModule:
    """Conv (with bias, as in the paper's code) + BatchNorm (+ GELU)."""
    return ConvModule(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                      bias=True, norm_cfg=BN, act_cfg=GELU if act else None)


def relative_position_bias(table: torch.Tensor, table_hw: Tuple[int, int], q_hw: Tuple[int, int],
                           k_hw: Tuple[int, int], q_stride: int, index_cache: Dict) -> torch.Tensor:
    """Bias [heads, Nq, Nk] of each query/key pair, looked up by their |dy|, |dx| offset on the key grid.

    ``table`` [heads, Hk0 * Wk0] holds one bias per offset on the key grid of the training size
    ``table_hw``; on another key grid it is resized bicubically. Query i sits at ``q_stride`` times its
    grid position on the key grid.
    """
    heads = table.shape[0]
    if tuple(k_hw) != tuple(table_hw):
        table = F.interpolate(table.reshape(1, heads, *table_hw), size=k_hw, mode='bicubic',
                              align_corners=False).reshape(heads, -1)
    key = (q_hw, k_hw, q_stride, table.device)
    if key not in index_cache:
        def grid(hw, step):
            ys, xs = torch.meshgrid(torch.arange(hw[0], device=table.device) * step,
                                    torch.arange(hw[1], device=table.device) * step, indexing='ij')
            return ys.flatten(), xs.flatten()

        qy, qx = grid(q_hw, q_stride)
        ky, kx = grid(k_hw, 1)
        index_cache[key] = (qy[:, None] - ky[None]).abs() * k_hw[1] + (qx[:, None] - kx[None]).abs()  # Nq, Nk
    return table[:, index_cache[key]]


class Attention4D(nn.Module):
    """MHSA on an NCHW map with a local value branch, talking heads and a relative position bias.

    Args:
        dim: channels of the map.
        key_dim: channels of a query/key head.
        num_heads: attention heads.
        attn_ratio: value head channels = ``attn_ratio * key_dim``.
        resolution: the attended grid at the training size (sets the bias table).
        stride: attend on a depth-wise-strided copy of the map and upsample back (stage 3), or None.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: Tuple[int, int] = (7, 7), stride: Optional[int] = None) -> None:
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.value_dim = attn_ratio * key_dim * num_heads
        self.stride = stride
        if stride is not None:
            self.stride_conv = conv_bn(dim, dim, 3, stride=stride, groups=dim)
        self.resolution = tuple(resolution)
        self.q = conv_bn(dim, key_dim * num_heads)
        self.k = conv_bn(dim, key_dim * num_heads)
        self.v = conv_bn(dim, self.value_dim)
        self.v_local = conv_bn(self.value_dim, self.value_dim, 3, groups=self.value_dim)
        # talking heads (Shazeer et al. 2020): 1x1 convs mixing the heads' attention maps
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = nn.GELU()
        self.proj = conv_bn(self.value_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, self.resolution[0] * self.resolution[1]))
        self._index_cache: Dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.stride is not None:
            x = self.stride_conv(x)  # B, C, H/s, W/s
        hw = tuple(x.shape[-2:])
        N = hw[0] * hw[1]
        q = self.q(x).reshape(B, self.num_heads, self.key_dim, N).transpose(-2, -1)  # B, h, N, d_k
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, N)  # B, h, d_k, N
        v = self.v(x)  # B, h * d_v, H', W'
        v_local = self.v_local(v)
        v = v.reshape(B, self.num_heads, -1, N).transpose(-2, -1)  # B, h, N, d_v

        attn = (q @ k) * self.scale + relative_position_bias(self.attention_biases, self.resolution, hw, hw, 1,
                                                             self._index_cache)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))  # B, h, N, N
        x = (attn @ v).transpose(-2, -1).reshape(B, self.value_dim, *hw) + v_local
        if self.stride is not None:
            x = F.interpolate(x, scale_factor=self.stride, mode='bilinear', align_corners=False)  # B, C_v, H, W
        return self.proj(self.act(x))


class LocalGlobalQuery(nn.Module):
    """Stride-2 queries: a depth-wise 3x3 conv (local) plus a stride-2 sample (global), projected."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.local = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels)
        self.pool = nn.AvgPool2d(1, stride=2)
        self.proj = conv_bn(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))  # B, C_out, H/2, W/2


class Attention4DDownsample(nn.Module):
    """Attention downsampling (the stage-4 embedding): stride-2 queries attend to the full-resolution keys."""

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: Tuple[int, int] = (14, 14)) -> None:
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.value_dim = attn_ratio * key_dim * num_heads
        self.resolution = tuple(resolution)
        self.q = LocalGlobalQuery(dim, key_dim * num_heads)
        self.k = conv_bn(dim, key_dim * num_heads)
        self.v = conv_bn(dim, self.value_dim)
        self.v_local = conv_bn(self.value_dim, self.value_dim, 3, stride=2, groups=self.value_dim)
        self.act = nn.GELU()
        self.proj = conv_bn(self.value_dim, out_dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, self.resolution[0] * self.resolution[1]))
        self._index_cache: Dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.q(x)  # B, h * d_k, H/2, W/2
        q_hw = tuple(q.shape[-2:])
        q = q.reshape(B, self.num_heads, self.key_dim, -1).transpose(-2, -1)  # B, h, Nq, d_k
        k = self.k(x).reshape(B, self.num_heads, self.key_dim, H * W)  # B, h, d_k, N
        v = self.v(x)
        v_local = self.v_local(v)  # B, h * d_v, H/2, W/2
        v = v.reshape(B, self.num_heads, -1, H * W).transpose(-2, -1)  # B, h, N, d_v

        attn = (q @ k) * self.scale + relative_position_bias(self.attention_biases, self.resolution, q_hw, (H, W),
                                                             2, self._index_cache)
        x = (attn.softmax(dim=-1) @ v).transpose(-2, -1).reshape(B, self.value_dim, *q_hw) + v_local
        return self.proj(self.act(x))


class Downsample(nn.Module):
    """Stride-2 3x3 conv-BN between stages, plus an attention branch where ``use_attn`` (stage 4)."""

    def __init__(self, in_channels: int, out_channels: int, use_attn: bool = False,
                 resolution: Tuple[int, int] = (14, 14)) -> None:
        super().__init__()
        self.conv = conv_bn(in_channels, out_channels, 3, stride=2)
        self.attn = Attention4DDownsample(in_channels, out_channels, resolution=resolution) if use_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out if self.attn is None else out + self.attn(x)


class ConvFFN(nn.Module):
    """1x1 expand, depth-wise 3x3 (the local token mixer of every block), 1x1 project; BN after each."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = conv_bn(dim, hidden_dim, act=True)
        self.mid = conv_bn(hidden_dim, hidden_dim, 3, groups=hidden_dim, act=True)
        self.fc2 = conv_bn(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.mid(self.fc1(x)))


class EfficientFormerV2Block(nn.Module):
    """``x + ls1(attn(x))`` (attention blocks only), then ``x + ls2(ffn(x))``, on NCHW maps."""

    def __init__(self, dim: int, mlp_ratio: float, use_attn: bool, resolution: Tuple[int, int],
                 attn_stride: Optional[int] = None, drop_path: float = 0., layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.token_mixer = Attention4D(dim, resolution=resolution, stride=attn_stride) if use_attn else None
        self.ls1 = LayerScale(dim, layer_scale_init_value, data_format='channels_first') if use_attn else None
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))


@register_backbone
class EfficientFormerV2(PyramidBackbone):
    """EfficientFormerV2 backbone (https://arxiv.org/abs/2212.08059), 4 stages at strides 4, 8, 16, 32.

    Args:
        arch: 's0', 's1', 's2', 'l', or a dict with ``embed_dims`` (4), ``depths`` (4), ``mlp_ratios``
            (one per stage: a number or one number per block) and ``num_vit`` (attention blocks at the end
            of stages 3 and 4).
        img_size: the training input size, which sets the position-bias tables (other sizes resize them).
        out_indices: stages whose maps are returned (0..3); the last one goes through the final BatchNorm.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        layer_scale_init_value: initial LayerScale of both residual branches.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        's0': dict(embed_dims=(32, 48, 96, 176), depths=(2, 2, 6, 4), num_vit=2,
                   mlp_ratios=(4, 4, (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
        's1': dict(embed_dims=(32, 48, 120, 224), depths=(3, 3, 9, 6), num_vit=2,
                   mlp_ratios=(4, 4, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
        's2': dict(embed_dims=(32, 64, 144, 288), depths=(4, 4, 12, 8), num_vit=4,
                   mlp_ratios=(4, 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4))),
        'l': dict(embed_dims=(40, 80, 192, 384), depths=(5, 5, 15, 10), num_vit=6,
                  mlp_ratios=(4, 4, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
    }
    input_multiple = 32

    def __init__(self, arch: Union[str, dict] = 's0', img_size: int = 224, out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0., layer_scale_init_value: float = 1e-5, freeze_at: int = -1,
                 freeze_norm: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        embed_dims, depths, num_vit = arch['embed_dims'], arch['depths'], arch['num_vit']
        mlp_ratios = [r if isinstance(r, Sequence) else (r, ) * d for r, d in zip(arch['mlp_ratios'], depths)]
        self.set_out_indices(out_indices, num_stages=4)
        check_divisible((img_size, img_size), self.input_multiple)
        self.embed_dims = tuple(embed_dims)

        self.stem = nn.Sequential()
        self.stem.add_module('conv1', conv_bn(3, embed_dims[0] // 2, 3, stride=2, act=True))
        self.stem.add_module('conv2', conv_bn(embed_dims[0] // 2, embed_dims[0], 3, stride=2, act=True))

        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.stages = nn.ModuleList()
        side = img_size // 4
        for i, depth in enumerate(depths):
            if i == 0:
                downsample = nn.Identity()
            else:
                # the stage-4 attention downsampling keeps keys on the stage-3 grid
                downsample = Downsample(embed_dims[i - 1], embed_dims[i], use_attn=i == 3, resolution=(side, side))
                side = math.ceil(side / 2)
            # stage 3 attends on a stride-2 copy of its map: the stage-4 grid
            attn_side = math.ceil(side / 2) if i == 2 else side
            first_attn = depth - num_vit if i >= 2 else depth
            blocks = [
                EfficientFormerV2Block(embed_dims[i], mlp_ratios[i][j], use_attn=j >= first_attn,
                                       resolution=(attn_side, attn_side), attn_stride=2 if i == 2 else None,
                                       drop_path=dpr[i][j], layer_scale_init_value=layer_scale_init_value)
                for j in range(depth)
            ]
            self.stages.append(PyramidStage(blocks, downsample))
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.set_stage_features(embed_dims, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def forward_out(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if i == self.num_stages - 1 else x  # B, C_i, H/2^(i+2), W/2^(i+2)
