"""FocalNet: focal modulation in place of self-attention.

Yang et al., "Focal Modulation Networks", NeurIPS 2022, https://arxiv.org/abs/2203.11926.

What it changes: a Swin-like 4-stage hierarchy whose token mixer aggregates context *before*
interacting with the query (Eq. 4-8): a stack of depth-wise convolutions with growing kernels
(``focal_window + focal_factor * l`` for levels ``l < focal_level``) plus a global-average level,
mixed by per-token gates, projected by ``h`` into a modulator that multiplies the query. No
attention matrix, no windows. The paper's variants are T/S/B with small (2 levels) or large
(3 levels) receptive fields, ``srf``/``lrf``.

Tokens stay channels-last (B, H, W, C) for the LayerNorms and the projections (``MapLinear``: linear
layers computed as 1x1 convolutions); the focal levels run on channels-first views of that memory.
Keys mirror the authors' release / timm's ``focalnet_*`` (timm keeps every linear layer as a 1x1 conv
weight: ``mmeff.converters.timm`` reshapes).
"""
from typing import List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from torch import Tensor, nn

from mmeff.registry import register_backbone

from ..layers.vit_blocks import Mlp
from .base import PyramidBackbone


class MapLinear(nn.Linear):
    """``nn.Linear`` over the channels of a channels-last map (B, H, W, C), run as a 1x1 convolution.

    Same parameters and state dict as ``nn.Linear``. Why: on the CPU, ``addmm`` first copies the bias
    into every output row, then accumulates the GEMM on top of it; oneDNN's convolution adds the bias
    in its epilogue, which saves one pass over each projection's output (FocalNet's speed at batch 32).
    """

    def forward(self, x: Tensor) -> Tensor:
        # B, H, W, C_in -> (B, C_in, H, W view: channels-last memory) -> B, H, W, C_out
        return F.conv2d(x.permute(0, 3, 1, 2), self.weight[:, :, None, None], self.bias).permute(0, 2, 3, 1)


class FocalModulation(nn.Module):
    """``y = q(x) * h(sum_l gate_l * ctx_l)`` with ``ctx_l`` from ``focal_level`` stacked depth-wise
    convs plus a global-average level (Eq. 5-8)."""

    def __init__(self, dim: int, focal_level: int = 2, focal_window: int = 3, focal_factor: int = 2):
        super().__init__()
        self.dim = dim
        self.focal_level = focal_level
        # query, context and one gate per level (the global level included) from one projection
        self.f = MapLinear(dim, 2 * dim + focal_level + 1)
        self.focal_layers = nn.ModuleList()
        for level in range(focal_level):
            kernel_size = focal_window + focal_factor * level
            self.focal_layers.append(nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False), nn.GELU()))
        self.act = nn.GELU()
        self.h = MapLinear(dim, dim)
        self.proj = MapLinear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: B, H, W, C. The depth-wise convs see B, C, H, W views; stored channels-last, they and the
        # gating run without layout copies and the modulator reaches ``h`` contiguous.
        q, ctx, gates = self.f(x).split((self.dim, self.dim, self.focal_level + 1), dim=-1)
        ctx = ctx.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)  # B, C, H, W
        gates = gates.permute(0, 3, 1, 2)  # B, L + 1, H, W
        ctx = self.focal_layers[0](ctx)
        ctx_all = ctx * gates[:, :1]
        for level in range(1, self.focal_level):
            ctx = self.focal_layers[level](ctx)  # each level sees a wider neighbourhood
            ctx_all.addcmul_(ctx, gates[:, level:level + 1])  # in place: one pass, no new map per level
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))  # B, C, 1, 1
        ctx_all.addcmul_(ctx_global, gates[:, self.focal_level:])
        return self.proj(q * self.h(ctx_all.permute(0, 2, 3, 1)))  # B, H, W, C


class FocalNetBlock(nn.Module):
    """Pre-norm block: ``x + FocalModulation(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, focal_level: int = 2, focal_window: int = 3, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(dim, focal_level, focal_window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, linear_layer=MapLinear)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        # x: B, H, W, C
        x = x + self.drop_path(self.modulation(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping ``stride x stride`` conv + LayerNorm: the stem (stride 4) and the 2x
    downsampling between stages. Takes and returns channels-last maps."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, stride, stride)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        # x: B, H, W, C_in -> B, H / stride, W / stride, C_out
        return self.norm(self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class FocalNetStage(nn.Module):
    """2x patch merging (all stages but the first), then the blocks."""

    def __init__(self, in_channels: int, dim: int, depth: int, downsample: bool, drop_paths: Sequence[float],
                 **block_kwargs):
        super().__init__()
        self.downsample = PatchEmbed(in_channels, dim, 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[FocalNetBlock(dim, drop_path=p, **block_kwargs) for p in drop_paths])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))  # B, H, W, C


@register_backbone
class FocalNet(PyramidBackbone):
    """FocalNet backbone: 4 stages at strides 4, 8, 16, 32 with widths ``embed_dim * 2**i``.

    Args:
        arch: 'tiny', 'small', 'base' or a dict with ``embed_dim`` and ``depths``.
        focal_level: number of depth-wise focal levels L (2 = "srf", 3 = "lrf").
        focal_window: kernel of the first focal level (the next ones grow by 2).
        mlp_ratio: MLP hidden width / embedding width.
        out_indices: stages to return (0..3) as NCHW maps; the last stage's map goes through the
            final LayerNorm.
        drop_path_rate: stochastic depth, linear over all blocks.
        freeze_at, freeze_norm: freeze the stem and that many stages (:meth:`PyramidBackbone.freeze`;
            FocalNet has no BatchNorm); default: nothing.
    """
    # Table 1 of the paper (one source of truth: base is 128 wide, not small's 96).
    arch_zoo = {
        'tiny': dict(embed_dim=96, depths=(2, 2, 6, 2)),
        'small': dict(embed_dim=96, depths=(2, 2, 18, 2)),
        'base': dict(embed_dim=128, depths=(2, 2, 18, 2)),
    }
    input_multiple = 32  # every stage map is exactly H / stride

    def __init__(self, arch: Union[str, Mapping] = 'tiny', focal_level: int = 2, focal_window: int = 3,
                 mlp_ratio: float = 4.0, out_indices: Sequence[int] = (3, ), drop_path_rate: float = 0.2,
                 freeze_at: int = -1, freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = (
                     dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.0),
                     dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0))):
        super().__init__(init_cfg=list(init_cfg) if isinstance(init_cfg, (list, tuple)) else init_cfg)
        arch = self.resolve_arch(arch)
        depths = arch['depths']
        if focal_level < 1:
            raise ValueError(f'focal_level must be >= 1 (the paper uses 2 "srf" and 3 "lrf"), got {focal_level}')
        self.set_out_indices(out_indices, num_stages=len(depths))
        self.num_features = [arch['embed_dim'] * 2 ** i for i in range(len(depths))]

        self.stem = PatchEmbed(3, self.num_features[0], 4)
        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(FocalNetStage(
                self.num_features[max(i - 1, 0)], self.num_features[i], depth, downsample=i > 0,
                drop_paths=dpr[i], focal_level=focal_level, focal_window=focal_window, mlp_ratio=mlp_ratio))
        self.norm = nn.LayerNorm(self.num_features[-1])
        self.set_stage_features(self.num_features, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    @property
    def stages(self) -> nn.ModuleList:
        return self.layers  # the authors' (and timm's) name

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.stem(x.permute(0, 2, 3, 1))  # the stages pass on channels-last maps B, H, W, C

    def forward_out(self, i: int, x: Tensor) -> Tensor:
        out = self.norm(x) if i == self.num_stages - 1 else x
        return out.permute(0, 3, 1, 2).contiguous()  # B, C, H, W
