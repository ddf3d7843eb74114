"""ResT: an efficient transformer for visual recognition (Zhang & Yang, NeurIPS 2021,
https://arxiv.org/abs/2105.13677).

A four-stage pyramid transformer with three changes to ViT's attention and embedding:

- efficient multi-head self-attention (EMSA): the keys and values come from the token map shrunk
  by a depth-wise conv (kernel s+1, stride s = the stage's reduction ratio) and a LayerNorm; the
  attention logits of the heads are then mixed by a 1x1 conv across heads, and after the softmax
  each head's attention map is instance-normalized, which restores the diversity that few heads
  (1, 2, 4, 8 per stage) and short key sequences would otherwise lose;
- patch embedding by strided convolutions (a 3-conv stride-4 stem, then 3x3/2 conv + BN);
- pixel-attention positional encoding (PA): each embedding is gated by ``sigmoid(dwconv3x3(x))``,
  so the model takes any input size without interpolating a position table.
"""
from typing import Mapping, Optional, Sequence, Union

import torch
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from torch import nn

from mmeff.registry import register_backbone

from ..layers.vit_blocks import HW, Mlp
from .base import PyramidBackbone


class EMSA(nn.Module):
    """Efficient multi-head self-attention. ``forward(x: [B, H*W, C], hw) -> [B, H*W, C]``.

    With ``sr_ratio=1`` and ``apply_transform=False`` it is standard multi-head attention.
    """

    def __init__(self, embed_dim: int, num_heads: int, sr_ratio: int = 1, apply_transform: bool = True,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dim // num_heads)**-0.5
        self.q = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim, bias=qkv_bias)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dim, embed_dim, sr_ratio + 1, sr_ratio, sr_ratio // 2, groups=embed_dim)
            self.sr_norm = nn.LayerNorm(embed_dim)
        # Mixing heads needs more than one head (the paper's stage 1 has one).
        self.apply_transform = apply_transform and num_heads > 1
        if self.apply_transform:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, 1)
            self.transform_norm = nn.InstanceNorm2d(num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        B, N, C = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(B, N, heads, -1).transpose(1, 2)  # B, heads, N, d
        if self.sr_ratio > 1:
            fmap = self.sr(x.transpose(1, 2).reshape(B, C, *hw))  # B, C, H/s, W/s
            x = self.sr_norm(fmap.flatten(2).transpose(1, 2))  # B, n, C
        kv = self.kv(x).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each B, heads, n, d
        attn = q @ k.transpose(-1, -2) * self.scale  # B, heads, N, n
        if self.apply_transform:
            attn = self.transform_norm(self.transform_conv(attn).softmax(dim=-1))
        else:
            attn = attn.softmax(dim=-1)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class PixelAttention(nn.Module):
    """PA positional encoding: ``x * sigmoid(dwconv3x3(x))`` on a [B, C, H, W] map."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(embed_dim, embed_dim, 3, padding=1, groups=embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv(x).sigmoid()


class ResTBlock(nn.Module):
    """Pre-norm block: ``x += drop_path(emsa(norm1(x)))``, then the MLP the same way."""

    def __init__(self, embed_dim: int, attn: EMSA, mlp_ratio: float, drop_path_rate: float, drop_rate: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = Mlp(embed_dim, mlp_ratio, drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def stem(in_channels: int, embed_dim: int) -> nn.Sequential:
    """Stride-4 stem: 3x3 convs with strides 2, 1, 2 (BN and ReLU after the first two), then PA."""
    norm_cfg = dict(type='BN')
    return nn.Sequential(
        ConvModule(in_channels, embed_dim // 2, 3, 2, 1, norm_cfg=norm_cfg),
        ConvModule(embed_dim // 2, embed_dim // 2, 3, 1, 1, norm_cfg=norm_cfg),
        nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1, bias=False),
        PixelAttention(embed_dim))


def patch_embed(in_channels: int, embed_dim: int) -> nn.Sequential:
    """Stage transition: 3x3/2 conv and BN (no conv bias: BN removes it), then PA."""
    return nn.Sequential(
        ConvModule(in_channels, embed_dim, 3, 2, 1, norm_cfg=dict(type='BN'), act_cfg=None),
        PixelAttention(embed_dim))


@register_backbone
class ResT(PyramidBackbone):
    """ResT backbone, https://arxiv.org/abs/2105.13677.

    Args:
        arch: ``'lite'``, ``'small'``, ``'base'``, ``'large'`` or a dict with per-stage
            ``embed_dims``, ``depths``, ``num_heads``, ``sr_ratios``.
        out_indices: stages to return (0..3: strides 4, 8, 16, 32), as NCHW maps; the last stage's
            map is LayerNorm-ed (the classifier pools it).
        mlp_ratio, qkv_bias: of every block.
        apply_transform: mix the heads' attention (1x1 conv) and instance-normalize it (EMSA).
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        'lite': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                     sr_ratios=(8, 4, 2, 1)),
        'small': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                      sr_ratios=(8, 4, 2, 1)),
        'base': dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                     sr_ratios=(8, 4, 2, 1)),
        'large': dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(1, 2, 4, 8),
                      sr_ratios=(8, 4, 2, 1)),
    }
    min_input_size = 32

    def __init__(self,
                 arch: Union[str, Mapping] = 'lite',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (3, ),
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 apply_transform: bool = True,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 freeze_at: int = -1,
                 freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg or [dict(type='TruncNormal', layer=['Linear', 'Conv2d'], std=0.02),
                                               dict(type='Constant', layer='LayerNorm', val=1.0)])
        arch = self.resolve_arch(arch)
        embed_dims, depths = arch['embed_dims'], arch['depths']
        num_stages = len(depths)
        self.set_out_indices(out_indices, num_stages)
        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.embeds = nn.ModuleList()  # the first one is the stem
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            dim = embed_dims[i]
            self.embeds.append(stem(in_channels, dim) if i == 0 else patch_embed(embed_dims[i - 1], dim))
            self.stages.append(nn.ModuleList([
                ResTBlock(dim,
                          EMSA(dim, arch['num_heads'][i], arch['sr_ratios'][i], apply_transform, qkv_bias,
                               proj_drop=drop_rate), mlp_ratio, rate, drop_rate)
                for rate in dpr[i]
            ]))
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.set_stage_features(embed_dims, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def stem_parts(self):
        return [self.embeds[0]]

    def stage_parts(self, i: int):
        return [self.embeds[i], self.stages[i]]

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.embeds[i](x)
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # B, H*W, C
        for block in self.stages[i]:
            x = block(x, (H, W))
        if i == self.num_stages - 1:
            x = self.norm(x)
        return x.transpose(1, 2).reshape(B, C, H, W)
