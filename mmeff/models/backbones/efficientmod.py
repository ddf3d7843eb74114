"""EfficientMod: efficient modulation blocks, with attention blocks at the end of the last two stages.

Ma et al., "Efficient Modulation for Vision Networks", ICLR 2024, https://arxiv.org/abs/2403.19963.

What the model changes (Sec. 3): the token mixer is a *modulation*, ``y = p(ctx(x) * v(x))``, where the
context ``ctx(x) = g(GELU(DWConv7x7(f(x))))`` is a large-kernel depth-wise conv between two linear layers
and the value ``v(x)`` is a linear layer. The block fuses the MLP into the modulation: ``v`` expands the
width by ``r`` (with GELU) and the context, computed at the block width, is *repeated* r times along the
channels instead of being expanded by another linear layer (Sec. 3.3: "EfficientMod block"), so a block
costs little more than an MLP. Blocks alternate r = 1 (then ``v`` is linear, as in the authors' models)
and r = 4 or 6. Stages 3 and 4 end with plain pre-norm attention blocks (heads of at least 32 channels)
for global interactions. Inside a stage maps are channels-last (LayerNorm, linear layers); the pyramid
outputs are NCHW. Inputs are multiples of 32 (exact strides 4-32; no part is tied to one resolution).
"""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.utils import LayerScale

from mmeff.registry import register_backbone

from ..layers.vit_blocks import HW, Mlp, TokenState, ViTBlock
from .base import PyramidBackbone


class ConvEmbed(nn.Module):
    """Strided conv then LayerNorm: NHWC [B, H, W, C_in] -> [B, H/s, W/s, C_out]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class ContextModeling(nn.Module):
    """``ctx(x) = g(GELU(DWConv_k(f(x))))`` on NHWC maps: the spatial context of every position."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.f = nn.Linear(dim, dim)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU()
        self.g = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.dwconv(self.f(x).permute(0, 3, 1, 2))  # B, C, H, W
        return self.g(self.act(ctx).permute(0, 2, 3, 1))  # B, H, W, C


class EfficientModulation(nn.Module):
    """``p(repeat_r(ctx(x)) * v(x))`` with ``v(x) = GELU(fc1(x))`` of width ``r * dim`` (linear when r = 1)."""

    def __init__(self, dim: int, expansion: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.expansion = expansion
        self.ctx = ContextModeling(dim, kernel_size)
        self.v = nn.Linear(dim, dim * expansion)
        self.act = nn.GELU() if expansion > 1 else nn.Identity()
        self.proj = nn.Linear(dim * expansion, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx(x)  # B, H, W, C
        v = self.act(self.v(x))  # B, H, W, r * C
        return self.proj(v * ctx.repeat(1, 1, 1, self.expansion))


class EfficientModBlock(nn.Module):
    """``x + drop_path(ls * modulation(LN(x)))`` on NHWC maps."""

    def __init__(self, dim: int, expansion: int, kernel_size: int = 7, drop_path: float = 0.,
                 layer_scale_init_value: float = 1e-4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.modulation = EfficientModulation(dim, expansion, kernel_size)
        self.ls = LayerScale(dim, layer_scale_init_value)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ls(self.modulation(self.norm(x))))


class WideHeadAttention(nn.Module):
    """Multi-head attention whose heads keep at least ``min_head_dim`` channels, so narrow stages
    attend in a wider inner space (``num_heads * head_dim`` may exceed ``dim``)."""

    def __init__(self, dim: int, num_heads: int = 8, min_head_dim: int = 32) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, max(dim // num_heads, min_head_dim)
        inner = num_heads * self.head_dim
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, hw: HW = None) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))  # B, heads, N, head_dim
        return self.proj(out.transpose(1, 2).reshape(B, N, -1))


class EfficientModStage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module], attn_blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.attn_blocks = nn.ModuleList(attn_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.downsample(x))  # B, H, W, C
        if len(self.attn_blocks):
            B, H, W, C = x.shape
            x = x.reshape(B, H * W, C)
            for block in self.attn_blocks:
                x, _ = block(x, TokenState((H, W)))
            x = x.reshape(B, H, W, C)
        return x


@register_backbone
class EfficientMod(PyramidBackbone):
    """EfficientMod backbone (https://arxiv.org/abs/2403.19963), 4 stages at strides 4, 8, 16, 32.

    Args:
        arch: 'xxs', 'xs', 's', or a dict with ``embed_dims``, ``depths`` (modulation blocks per stage),
            ``attention_depths`` (attention blocks closing each stage), ``expansion`` (r of every other
            modulation block; the others have r = 1) and ``attention_mlp_ratios``.
        kernel_size: the context's depth-wise kernel.
        out_indices: stages whose maps are returned (0..3, NCHW); the last one goes through the final
            LayerNorm.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        layer_scale_init_value: initial LayerScale of the modulation blocks.
        freeze_at, freeze_norm: freeze the stem and that many stages (:meth:`PyramidBackbone.freeze`;
            EfficientMod has no BatchNorm); default: nothing.
    """
    arch_zoo = {
        'xxs': dict(embed_dims=(32, 64, 128, 256), depths=(2, 2, 6, 2), attention_depths=(0, 0, 1, 2), expansion=6,
                    attention_mlp_ratios=(4, 4, 4, 4)),
        'xs': dict(embed_dims=(32, 64, 144, 288), depths=(3, 3, 4, 2), attention_depths=(0, 0, 3, 3), expansion=4,
                   attention_mlp_ratios=(4, 4, 4, 4)),
        's': dict(embed_dims=(32, 64, 144, 312), depths=(4, 4, 8, 4), attention_depths=(0, 0, 4, 4), expansion=6,
                  attention_mlp_ratios=(4, 4, 4, 5)),
    }
    input_multiple = 32

    def __init__(self, arch: Union[str, dict] = 'xxs', kernel_size: int = 7, out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0., layer_scale_init_value: float = 1e-4, freeze_at: int = -1,
                 freeze_norm: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        embed_dims, depths, attn_depths = arch['embed_dims'], arch['depths'], arch['attention_depths']
        self.set_out_indices(out_indices, num_stages=len(depths))

        self.stem = ConvEmbed(3, embed_dims[0], 7, stride=4)
        dpr = self.drop_path_schedule(drop_path_rate, [d + a for d, a in zip(depths, attn_depths)])
        self.stages = nn.ModuleList()
        for i, (dim, stage_dpr) in enumerate(zip(embed_dims, dpr)):
            blocks = [
                # r alternates 1, expansion, 1, ...
                EfficientModBlock(dim, arch['expansion'] if j % 2 else 1, kernel_size, stage_dpr[j],
                                  layer_scale_init_value) for j in range(depths[i])
            ]
            attn_blocks = [
                ViTBlock(dim, WideHeadAttention(dim), Mlp(dim, arch['attention_mlp_ratios'][i]), init_values=None,
                         drop_path_rate=p, norm_eps=1e-5) for p in stage_dpr[depths[i]:]
            ]
            downsample = nn.Identity() if i == 0 else ConvEmbed(embed_dims[i - 1], dim, 3, stride=2)
            self.stages.append(EfficientModStage(downsample, blocks, attn_blocks))
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.set_stage_features(embed_dims, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x.permute(0, 2, 3, 1))  # the stages pass on channels-last maps B, H, W, C

    def forward_out(self, i: int, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(x) if i == self.num_stages - 1 else x
        return out.permute(0, 3, 1, 2).contiguous()  # B, C_i, H/2^(i+2), W/2^(i+2)
