"""Wave-ViT: unifying wavelet and transformers for visual representation learning
(Yao et al., ECCV 2022, https://arxiv.org/abs/2207.04978).

A four-stage pyramid transformer whose first two stages down-sample the keys and values with a
wavelet transform instead of a strided conv or pooling. The Haar DWT halves the map without losing
anything (it is invertible): the 4 sub-bands of a 2x2 neighbourhood carry all its pixels. Wavelet
attention therefore

1. reduces the channels to C/4 (1x1 conv), takes the DWT (C/4 -> 4 x C/4 = C channels at H/2) and
   mixes the sub-bands with a 3x3 conv;
2. embeds that map at stride ``sr_ratio`` into the keys and values (the paper's down-sampling);
3. adds a local branch: the inverse DWT of the mixed sub-bands (C/4 channels back at H), which is
   concatenated to the attention output before the output projection.

The last two stages use plain multi-head attention; every block's MLP is PVTv2's (fc, 3x3
depth-wise conv, GELU, fc). The DWT and IDWT are fixed (non-learnt) stride-2 convolutions, so the
model exports to ONNX.
"""
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmdet.models.backbones.pvt import MixFFN
from torch import nn

from mmeff.registry import register_backbone

from ..layers.vit_blocks import HW
from ..mixers.softmax_attention import SoftmaxAttention
from .base import PyramidBackbone


def _haar_filters() -> torch.Tensor:
    """The orthonormal 2-D Haar analysis filters [4, 1, 2, 2] in the order LL, LH, HL, HH.

    On a 2x2 patch [[a, b], [c, d]]: LL = (a+b+c+d)/2, LH = (a+b-c-d)/2 (high-pass along the height),
    HL = (a-b+c-d)/2 (along the width), HH = (a-b-c+d)/2.
    """
    low, high = torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0])
    pairs = ((low, low), (high, low), (low, high), (high, high))  # (along height, along width)
    return torch.stack([torch.outer(h, w) / 2 for h, w in pairs]).unsqueeze(1)


class HaarDWT(nn.Module):
    """One level of the 2-D Haar DWT: [B, C, H, W] -> [B, 4C, H/2, W/2] (sub-band major: LL of all
    channels, then LH, HL, HH), as one depth-wise stride-2 conv with fixed filters."""

    def __init__(self):
        super().__init__()
        self.register_buffer('filters', _haar_filters(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        bands = F.conv2d(x.reshape(B * C, 1, H, W), self.filters, stride=2)  # B*C, 4, H/2, W/2
        return bands.reshape(B, C, 4, H // 2, W // 2).transpose(1, 2).reshape(B, 4 * C, H // 2, W // 2)


class HaarIDWT(HaarDWT):
    """The inverse of :class:`HaarDWT`: [B, 4C, h, w] -> [B, C, 2h, 2w]. The filters are orthonormal,
    so the transposed conv with the same filters inverts the DWT exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C4, h, w = x.shape
        bands = x.reshape(B, 4, C4 // 4, h, w).transpose(1, 2).reshape(B * C4 // 4, 4, h, w)
        return F.conv_transpose2d(bands, self.filters, stride=2).reshape(B, C4 // 4, 2 * h, 2 * w)


class WaveletAttention(nn.Module):
    """Multi-head attention whose keys/values are a wavelet down-sampled map, plus the inverse-wavelet
    local branch (see the module docstring). ``forward(x: [B, H*W, C], hw) -> [B, H*W, C]``."""

    def __init__(self, embed_dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f'Wave-ViT embed_dim={embed_dim} must be divisible by 4 (the 4 wavelet sub-bands)')
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        # conv (with a bias, as the authors' even before the BN), BN, ReLU
        conv_bn_relu = dict(bias=True, norm_cfg=dict(type='BN'))
        self.reduce = ConvModule(embed_dim, embed_dim // 4, 1, **conv_bn_relu)
        self.dwt = HaarDWT()
        self.filter = ConvModule(embed_dim, embed_dim, 3, padding=1, **conv_bn_relu)
        self.idwt = HaarIDWT()
        self.kv_embed = nn.Conv2d(embed_dim, embed_dim, sr_ratio, sr_ratio) if sr_ratio > 1 else nn.Identity()
        self.q = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.kv_norm = nn.LayerNorm(embed_dim)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim + embed_dim // 4, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        B, N, C = x.shape
        H, W = hw
        heads = self.num_heads
        q = self.q(x).reshape(B, N, heads, -1).transpose(1, 2)  # B, heads, N, d
        bands = self.filter(self.dwt(self.reduce(x.transpose(1, 2).reshape(B, C, H, W))))  # B, C, H/2, W/2
        local = self.idwt(bands).flatten(2).transpose(1, 2)  # B, N, C/4
        kv = self.kv(self.kv_norm(self.kv_embed(bands).flatten(2).transpose(1, 2)))  # B, n, 2C
        k, v = kv.reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4).unbind(0)  # B, heads, n, d
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = torch.cat([out.transpose(1, 2).reshape(B, N, C), local], dim=-1)
        return self.proj_drop(self.proj(out))


class WaveViTBlock(nn.Module):
    """Pre-norm block: ``x += drop_path(attn(norm1(x)))``, then PVTv2's conv MLP the same way."""

    def __init__(self, embed_dim: int, attn: nn.Module, mlp_ratio: float, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.attn = attn
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dim, eps=1e-6)
        # mmdet's PVTv2 MLP (1x1 conv, depth-wise 3x3, GELU, 1x1 conv; the depth-wise conv only with
        # use_conv=True); it adds the residual itself.
        self.mlp = MixFFN(embed_dim, int(embed_dim * mlp_ratio), ffn_drop=drop_rate, use_conv=True,
                          dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate))

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return self.mlp(self.norm2(x), hw, identity=x)


class Stem(nn.Module):
    """Stride-4 conv stem: 7x7/2 conv, two 3x3 convs (BN, ReLU), then a 3x3/2 conv and LayerNorm."""

    def __init__(self, in_channels: int, hidden_dim: int, embed_dim: int):
        super().__init__()
        norm_cfg = dict(type='BN')
        self.convs = nn.Sequential(
            ConvModule(in_channels, hidden_dim, 7, 2, 3, norm_cfg=norm_cfg),
            ConvModule(hidden_dim, hidden_dim, 3, 1, 1, norm_cfg=norm_cfg),
            ConvModule(hidden_dim, hidden_dim, 3, 1, 1, norm_cfg=norm_cfg))
        self.proj = nn.Conv2d(hidden_dim, embed_dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x))


class WaveViTClassBlock(nn.Module):
    """The classifier's class-attention block: a class token, initialised as the mean of the tokens,
    attends to [itself, tokens], then passes an MLP; returns the class token [B, C]."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.q = nn.Linear(embed_dim, embed_dim)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim, eps=1e-6)
        hidden = int(embed_dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        cls = x.mean(dim=1, keepdim=True)  # B, 1, C
        tokens = self.norm1(torch.cat([cls, x], dim=1))
        q = self.q(tokens[:, :1]).reshape(B, 1, self.num_heads, -1).transpose(1, 2)
        kv = self.kv(tokens).reshape(B, N + 1, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # B, heads, N + 1, d
        cls = cls + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C))
        return (cls + self.mlp(self.norm2(cls)))[:, 0]


@register_backbone
class WaveViT(PyramidBackbone):
    """Wave-ViT backbone, https://arxiv.org/abs/2207.04978.

    Args:
        arch: ``'s'``, ``'b'``, ``'l'`` (the paper's Wave-ViT-S/B/L) or a dict with ``stem_hidden_dim``
            and per-stage ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``, ``sr_ratios``.
        out_indices: stages to return (0..3: strides 4, 8, 16, 32), as LayerNorm-ed NCHW maps.
        out_type: ``'featmap'`` (maps) or ``'cls_token'``: the paper's classifier input, a class
            token (the mean of the last stage's tokens) refined by one class-attention block.
        wavelet_stages: how many stages (from the first) use wavelet attention; the rest plain attention.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        's': dict(stem_hidden_dim=32, embed_dims=(64, 128, 320, 448), depths=(3, 4, 6, 3),
                  num_heads=(2, 4, 10, 14), mlp_ratios=(8, 8, 4, 4), sr_ratios=(4, 2, 1, 1)),
        'b': dict(stem_hidden_dim=64, embed_dims=(64, 128, 320, 512), depths=(3, 4, 12, 3),
                  num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4), sr_ratios=(4, 2, 1, 1)),
        'l': dict(stem_hidden_dim=64, embed_dims=(96, 192, 384, 512), depths=(3, 6, 18, 3),
                  num_heads=(3, 6, 12, 16), mlp_ratios=(8, 8, 4, 4), sr_ratios=(4, 2, 1, 1)),
    }
    input_multiple = 32
    out_types = ('featmap', 'cls_token')

    def __init__(self,
                 arch: Union[str, Mapping] = 's',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (3, ),
                 out_type: str = 'featmap',
                 wavelet_stages: int = 2,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 freeze_at: int = -1,
                 freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg or [dict(type='TruncNormal', layer='Linear', std=0.02),
                                               dict(type='Constant', layer='LayerNorm', val=1.0)])
        arch = self.resolve_arch(arch)
        embed_dims, depths = arch['embed_dims'], arch['depths']
        num_stages = len(depths)
        self.set_out_indices(out_indices, num_stages, out_type)
        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.embeds = nn.ModuleList()  # the first one is the stem
        self.stages = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(num_stages):
            dim, heads = embed_dims[i], arch['num_heads'][i]
            self.embeds.append(Stem(in_channels, arch['stem_hidden_dim'], dim) if i == 0 else
                               nn.Conv2d(embed_dims[i - 1], dim, 3, 2, 1))
            self.stages.append(nn.ModuleList([
                WaveViTBlock(
                    dim,
                    WaveletAttention(dim, heads, arch['sr_ratios'][i], qkv_bias, proj_drop=drop_rate)
                    if i < wavelet_stages else SoftmaxAttention(dim, heads, qkv_bias, proj_drop=drop_rate),
                    arch['mlp_ratios'][i], rate, drop_rate) for rate in dpr[i]
            ]))
            # A LayerNorm after each embedding conv (embed_norms) and after each stage (norms).
            self.norms.append(nn.LayerNorm(dim, eps=1e-6))
        self.embed_norms = nn.ModuleList([nn.LayerNorm(d) for d in embed_dims])
        if out_type == 'cls_token':
            # The last stage's norm is the class token's in this mode; its map is not returned.
            self.cls_block = WaveViTClassBlock(embed_dims[-1], arch['num_heads'][-1], arch['mlp_ratios'][-1])
        self.set_stage_features(embed_dims, [4 * 2**i for i in range(num_stages)])
        self.freeze(freeze_at, freeze_norm)

    def stem_parts(self):
        return [self.embeds[0]]

    def stage_parts(self, i: int):
        return [self.embeds[i], self.embed_norms[i], self.stages[i], self.norms[i]]

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.embeds[i](x)  # B, C, H, W
        B, C, H, W = x.shape
        x = self.embed_norms[i](x.flatten(2).transpose(1, 2))  # B, H*W, C
        for block in self.stages[i]:
            x = block(x, (H, W))
        if self.returns_vector(i):
            return x  # the tokens, for the class block
        return self.norms[i](x).transpose(1, 2).reshape(B, C, H, W)

    def forward_out(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.norms[i](self.cls_block(x)) if self.returns_vector(i) else x  # B, C or B, C, H, W
