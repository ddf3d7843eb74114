"""CvT: introducing convolutions to vision transformers (Wu et al., ICCV 2021, https://arxiv.org/abs/2103.15808).

CvT brings two convolutions into a three-stage transformer hierarchy:

- convolutional token embedding: each stage starts with an overlapping strided conv on the previous
  stage's map (7x7/4, then 3x3/2 twice) and a LayerNorm, so the tokens shrink and widen like a CNN's;
- convolutional projection: before the linear q/k/v projections, the token map passes a depth-wise
  3x3 conv + BatchNorm, stride 1 for the queries and stride 2 for the keys and values, which cuts the
  attention cost 4x and gives the tokens local context (CvT drops the position embedding).

The class token joins only in the last stage; it skips the convolutions and is the classifier's input.
The stage outputs are the strides 4, 8 and 16 maps (CvT has three stages, hence no stride 32).
"""
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from mmeff.registry import register_backbone

from ..layers.vit_blocks import HW, Mlp, TokenState, ViTBlock
from .base import PyramidBackbone


class ConvProjection(nn.Sequential):
    """Depth-wise kxk conv (stride 1 for q, 2 for k/v) + BatchNorm on a [B, C, H, W] token map."""

    def __init__(self, embed_dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(embed_dim, embed_dim, kernel_size, stride, kernel_size // 2, groups=embed_dim,
                              bias=False)
        self.bn = nn.BatchNorm2d(embed_dim)


class ConvAttention(nn.Module):
    """Multi-head attention whose q, k, v come from a convolutional projection of the token map.

    ``forward(x: [B, (1 +) H*W, C], hw) -> same shape``; with a class token, it is the first token,
    joins q, k and v unconvolved and attends like every other token.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 kernel_size: int = 3,
                 stride_q: int = 1,
                 stride_kv: int = 2,
                 qkv_bias: bool = True,
                 with_cls_token: bool = False,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.with_cls_token = with_cls_token
        # The authors scale by the full width, 1/sqrt(C), not by the head width; their released
        # weights (and HF's port) depend on it.
        self.scale = embed_dim**-0.5
        self.attn_drop = attn_drop
        self.conv_q = ConvProjection(embed_dim, kernel_size, stride_q)
        self.conv_k = ConvProjection(embed_dim, kernel_size, stride_kv)
        self.conv_v = ConvProjection(embed_dim, kernel_size, stride_kv)
        self.q = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.k = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.v = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        B, N, C = x.shape
        H, W = hw
        if self.with_cls_token:
            cls, x = x[:, :1], x[:, 1:]
        fmap = x.transpose(1, 2).reshape(B, C, H, W)

        def tokens(proj: nn.Linear, conv: ConvProjection) -> torch.Tensor:
            t = conv(fmap).flatten(2).transpose(1, 2)  # B, n, C
            if self.with_cls_token:
                t = torch.cat([cls, t], dim=1)
            return proj(t).reshape(B, t.shape[1], self.num_heads, -1).transpose(1, 2)  # B, heads, n, d

        q, k, v = tokens(self.q, self.conv_q), tokens(self.k, self.conv_k), tokens(self.v, self.conv_v)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                           scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class ConvEmbed(nn.Module):
    """Convolutional token embedding: strided overlapping conv, then LayerNorm over channels."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, embed_dim, patch_size, stride, padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # B, C, H, W
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CvTStage(nn.Module):
    """Convolutional token embedding, an optional class token, ``depth`` transformer blocks."""

    def __init__(self, in_channels: int, embed_dim: int, depth: int, num_heads: int, patch_size: int,
                 patch_stride: int, patch_padding: int, mlp_ratio: float, qkv_bias: bool, with_cls_token: bool,
                 drop_rate: float, drop_path_rates: Sequence[float]):
        super().__init__()
        self.embed = ConvEmbed(in_channels, embed_dim, patch_size, patch_stride, patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if with_cls_token else None
        self.blocks = nn.ModuleList([
            ViTBlock(embed_dim,
                     ConvAttention(embed_dim, num_heads, qkv_bias=qkv_bias, with_cls_token=with_cls_token,
                                   proj_drop=drop_rate),
                     Mlp(embed_dim, mlp_ratio, drop_rate),
                     init_values=None,
                     drop_path_rate=dpr,
                     norm_eps=1e-5) for dpr in drop_path_rates
        ])

    def forward(self, x: torch.Tensor):
        """[B, C_in, H_in, W_in] -> (map [B, C, H, W], class token [B, 1, C] or None)."""
        x = self.embed(x)
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # B, H*W, C
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        for block in self.blocks:
            x, _ = block(x, TokenState((H, W)))
        cls = None
        if self.cls_token is not None:
            cls, x = x[:, :1], x[:, 1:]
        return x.transpose(1, 2).reshape(B, C, H, W), cls


@register_backbone
class CvT(PyramidBackbone):
    """CvT backbone, https://arxiv.org/abs/2103.15808.

    Args:
        arch: ``'13'``, ``'21'``, ``'w24'`` (the paper's CvT-13, CvT-21, CvT-W24) or a dict with
            ``embed_dims``, ``depths``, ``num_heads`` (one entry per stage).
        out_indices: stages to return (0, 1, 2: strides 4, 8, 16), as NCHW maps.
        out_type: ``'featmap'`` returns maps for every out_index; ``'cls_token'`` returns the
            LayerNorm-ed class token [B, C] for the last stage (the paper's classifier input).
        mlp_ratio, qkv_bias: of every transformer block.
        drop_rate: dropout after the attention projection and in the MLP.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        freeze_at, freeze_norm: freeze the first token embedding (0) and that many stages, turn the
            BatchNorms frozen (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        '13': dict(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6)),
        '21': dict(embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6)),
        'w24': dict(embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16)),
    }
    # Convolutional token embedding of each stage: (kernel, stride, padding).
    patch_settings = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
    min_input_size = 16
    out_types = ('featmap', 'cls_token')

    def __init__(self,
                 arch: Union[str, Mapping] = '13',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (2, ),
                 out_type: str = 'featmap',
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 freeze_at: int = -1,
                 freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg or [dict(type='TruncNormal', layer='Linear', std=0.02),
                                               dict(type='Constant', layer='LayerNorm', val=1.0)])
        arch = self.resolve_arch(arch)
        embed_dims, depths, num_heads = arch['embed_dims'], arch['depths'], arch['num_heads']
        num_stages = len(embed_dims)
        self.set_out_indices(out_indices, num_stages, out_type)
        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            self.stages.append(
                CvTStage(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i], depths[i], num_heads[i],
                         *self.patch_settings[i], mlp_ratio, qkv_bias, with_cls_token=i == num_stages - 1,
                         drop_rate=drop_rate, drop_path_rates=dpr[i]))
        self.norm = nn.LayerNorm(embed_dims[-1]) if out_type == 'cls_token' else None
        self.set_stage_features(embed_dims, [4 * 2**i for i in range(num_stages)])
        self.freeze(freeze_at, freeze_norm)

    def init_weights(self):
        super().init_weights()
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            trunc_normal_(self.stages[-1].cls_token, std=0.02)

    def stem_parts(self):
        return [self.stages[0].embed]  # no stem: the first convolutional token embedding is one

    def forward_stem(self, x: torch.Tensor):
        return x, None  # the stages pass on (map [B, C, H, W], class token [B, 1, C] or None)

    def forward_stage(self, i: int, x):
        return self.stages[i](x[0])

    def forward_out(self, i: int, x) -> torch.Tensor:
        fmap, cls = x
        if self.returns_vector(i):
            return self.norm(cls[:, 0])  # B, C
        return fmap  # B, C, H, W
