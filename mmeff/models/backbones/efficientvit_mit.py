"""EfficientViT (MIT): multi-scale linear attention for high-resolution dense prediction.

Cai et al., "EfficientViT: Lightweight Multi-Scale Attention for High-Resolution Dense
Prediction", ICCV 2023, https://arxiv.org/abs/2205.14756.

What it changes: softmax attention becomes ReLU linear attention (global receptive field at cost
linear in the token count), and because ReLU attention cannot focus locally, every query/key/value
map is also aggregated over 5x5 neighbourhoods by small depth-wise + grouped convs; attention runs on
both scales ("multi-scale linear attention", Fig. 3). An EfficientViT module pairs it with an MBConv
for local features (Fig. 4). Stages 1-2 are convolutional; the B-series uses MBConvs and Hardswish,
the L-series fused MBConvs early, GELU, BN eps 1e-7 (authors' release, ICCV'23 version).

Not to be confused with Microsoft's EfficientViT (Liu et al., CVPR 2023, cascaded group attention).
Module names follow the authors' release (timm's ``efficientvit_*``): every conv-norm-act is mmcv's
``ConvModule`` (``bn`` where they say ``norm``; ``mmeff.converters.timm`` renames). The classifier's conv +
MLP head is :class:`EfficientViTClsHead`.
"""
from types import MappingProxyType
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.heads import ClsHead
from torch import Tensor, nn

from mmeff.registry import CLS_MODELS, register_backbone

from ..layers.pyramid import drop_path_rates
from .base import PyramidBackbone, PyramidStage

# What the two series differ in besides their sizes.
SERIES = MappingProxyType({
    'b': MappingProxyType(dict(act_cfg=dict(type='HSwish'), norm_eps=1e-5)),
    'l': MappingProxyType(dict(act_cfg=dict(type='GELU', approximate='tanh'), norm_eps=1e-7)),
})


def conv(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
         norm_eps: Optional[float] = 1e-5, act_cfg: Optional[dict] = None, bias='auto') -> ConvModule:
    """conv (+ BN unless ``norm_eps`` is None) (+ activation); 'same' padding for odd kernels."""
    norm_cfg = dict(type='BN', eps=norm_eps) if norm_eps is not None else None
    return ConvModule(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias,
                      norm_cfg=norm_cfg, act_cfg=act_cfg)


class DSConv(nn.Module):
    """Depth-wise separable conv: dw 3x3 (+ act), then pw 1x1 (no act)."""

    def __init__(self, in_channels, out_channels, stride=1, norm_eps=1e-5, act_cfg=None):
        super().__init__()
        self.depth_conv = conv(in_channels, in_channels, 3, stride, in_channels, norm_eps, act_cfg)
        self.point_conv = conv(in_channels, out_channels, 1, norm_eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.depth_conv(x))


class ConvBlock(nn.Module):
    """Two full 3x3 convs (the L-series stem's block)."""

    def __init__(self, in_channels, out_channels, stride=1, norm_eps=1e-5, act_cfg=None):
        super().__init__()
        self.conv1 = conv(in_channels, in_channels, 3, stride, norm_eps=norm_eps, act_cfg=act_cfg)
        self.conv2 = conv(in_channels, out_channels, 3, norm_eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class MBConv(nn.Module):
    """Inverted bottleneck: pw expand, dw 3x3, pw project. ``fewer_norm`` drops the BN (and keeps a
    bias) in the first two convs, as the authors do inside the attention stages."""

    def __init__(self, in_channels, out_channels, stride=1, expand_ratio=4.0, norm_eps=1e-5, act_cfg=None,
                 fewer_norm=False):
        super().__init__()
        mid = round(in_channels * expand_ratio)
        inner_eps = None if fewer_norm else norm_eps
        self.inverted_conv = conv(in_channels, mid, 1, norm_eps=inner_eps, act_cfg=act_cfg)
        self.depth_conv = conv(mid, mid, 3, stride, mid, norm_eps=inner_eps, act_cfg=act_cfg)
        self.point_conv = conv(mid, out_channels, 1, norm_eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    """MBConv with the expansion and the dw conv fused into one full 3x3 conv (L-series, early stages)."""

    def __init__(self, in_channels, out_channels, stride=1, expand_ratio=4.0, norm_eps=1e-5, act_cfg=None):
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.spatial_conv = conv(in_channels, mid, 3, stride, norm_eps=norm_eps, act_cfg=act_cfg)
        self.point_conv = conv(mid, out_channels, 1, norm_eps=norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.spatial_conv(x))


class Residual(nn.Module):
    """``x + main(x)`` (stochastic depth on the branch), or ``main(x)`` where the shape changes."""

    def __init__(self, main: nn.Module, shortcut: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.main = main
        self.shortcut = shortcut
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.main(x)) if self.shortcut else self.main(x)


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (Eq. 2 and Fig. 3).

    ``out_i = sum_j relu(q_i) relu(k_j)^T v_j / sum_j relu(q_i) relu(k_j)^T``, computed as
    ``relu(q) (relu(k)^T [v, 1])``: the key-value product is formed first, so the cost is linear in
    the number of tokens. The normalizer is the extra column of ones appended to v. The qkv maps are
    used as they are and after a 5x5 aggregation; each scale contributes its own heads.
    """

    def __init__(self, channels: int, head_dim: int = 32, scales: Sequence[int] = (5, ), norm_eps: float = 1e-5,
                 eps: float = 1e-5):
        super().__init__()
        heads = channels // head_dim
        total_dim = heads * head_dim
        self.head_dim = head_dim
        self.eps = eps
        # channels are laid out per head as (q, k, v), so a reshape splits them
        self.qkv = conv(channels, 3 * total_dim, 1, norm_eps=None, bias=False)
        self.aggreg = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(3 * total_dim, 3 * total_dim, scale, padding=scale // 2, groups=3 * total_dim, bias=False),
                nn.Conv2d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=False))  # mixes q/k/v of a head
            for scale in scales
        ])
        self.proj = conv(total_dim * (1 + len(scales)), channels, 1, norm_eps=norm_eps)

    def linear_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # float32 even under autocast: the normalizing division is unstable in half precision
        q, k, v = F.relu(q).float(), F.relu(k).float(), F.pad(v.float(), (0, 1), value=1.0)
        out = q @ (k.transpose(-1, -2) @ v)  # B, heads, N, head_dim + 1
        return out[..., :-1] / (out[..., -1:] + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        qkv = self.qkv(x)  # B, 3 * total_dim, H, W
        qkv = torch.cat([qkv, *(aggregate(qkv) for aggregate in self.aggreg)], dim=1)
        qkv = qkv.reshape(B, -1, 3 * self.head_dim, H * W).transpose(-1, -2)  # B, heads, N, 3 * head_dim
        out = self.linear_attention(*qkv.chunk(3, dim=-1)).to(x.dtype)
        return self.proj(out.transpose(-1, -2).reshape(B, -1, H, W))


class EfficientViTModule(nn.Module):
    """Context (multi-scale linear attention) then local (MBConv) features, both residual (Fig. 4)."""

    def __init__(self, channels: int, head_dim: int, expand_ratio: float, norm_eps: float, act_cfg: dict,
                 drop_path: float = 0.0):
        super().__init__()
        self.context_module = Residual(LiteMLA(channels, head_dim, norm_eps=norm_eps), drop_path=drop_path)
        self.local_module = Residual(
            MBConv(channels, channels, 1, expand_ratio, norm_eps, act_cfg, fewer_norm=True), drop_path=drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return self.local_module(self.context_module(x))


@register_backbone
class EfficientViTMIT(PyramidBackbone):
    """EfficientViT (MIT) backbone: a stride-2 stem, then 4 stages at strides 4, 8, 16, 32; the last
    two (the last one in the L-series) are EfficientViT modules.

    Args:
        arch: 'b0', 'b1', 'b2', 'b3', 'l1', 'l2' or a dict with ``series`` ('b' or 'l'), ``widths``
            (stem + 4 stages), ``depths`` (stem + 4 stages) and ``head_dim``.
        out_indices: stages to return (0..3), NCHW maps at strides 4, 8, 16, 32.
        drop_path_rate: stochastic depth on the residual blocks, linear over the stages' blocks.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    # The sizes of the authors' release: widths/depths of the stem and 4 stages, attention head dim.
    arch_zoo = {
        'b0': dict(series='b', widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), head_dim=16),
        'b1': dict(series='b', widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), head_dim=16),
        'b2': dict(series='b', widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6), head_dim=32),
        'b3': dict(series='b', widths=(32, 64, 128, 256, 512), depths=(1, 4, 6, 6, 9), head_dim=32),
        'l1': dict(series='l', widths=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 6), head_dim=32),
        'l2': dict(series='l', widths=(32, 64, 128, 256, 512), depths=(1, 2, 2, 8, 8), head_dim=32),
    }
    input_multiple = 32  # every stage map is exactly H / stride

    def __init__(self, arch: Union[str, Mapping] = 'b0', out_indices: Sequence[int] = (3, ),
                 drop_path_rate: float = 0.0, freeze_at: int = -1, freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = (
                     dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.0), )):
        super().__init__(init_cfg=list(init_cfg) if isinstance(init_cfg, (list, tuple)) else init_cfg)
        arch = self.resolve_arch(arch)
        if arch['series'] not in SERIES:
            raise KeyError(f"unknown series {arch['series']!r}; choose one of {', '.join(SERIES)}")
        widths, depths, head_dim = arch['widths'], arch['depths'], arch['head_dim']
        large = arch['series'] == 'l'
        norm = dict(norm_eps=SERIES[arch['series']]['norm_eps'], act_cfg=dict(SERIES[arch['series']]['act_cfg']))
        self.set_out_indices(out_indices, num_stages=len(depths) - 1)
        self.num_features = list(widths[1:])

        self.stem = nn.Sequential()
        self.stem.add_module('in_conv', conv(3, widths[0], 3, 2, **norm))
        for i in range(depths[0]):
            block = (ConvBlock if large else DSConv)(widths[0], widths[0], **norm)
            self.stem.add_module(f'res{i}', Residual(block))

        # in stage order over the residual blocks, counted as the depths (which in the B-series count the
        # downsampling block too: the last rates stay unused, as in the authors' release)
        dpr = iter(drop_path_rates(drop_path_rate, sum(depths[1:])))
        self.stages = nn.ModuleList()
        for i, (c_in, c_out, depth) in enumerate(zip(widths[:-1], widths[1:], depths[1:])):
            attention = i >= (3 if large else 2)
            if attention:
                down = MBConv(c_in, c_out, 2, 24 if large else 4, fewer_norm=True, **norm)
                blocks = [EfficientViTModule(c_out, head_dim, 6 if large else 4, drop_path=next(dpr), **norm)
                          for _ in range(depth)]
            elif large:  # fused MBConvs where the maps are large, MBConvs from stride 16
                fused = i < 2
                down = FusedMBConv(c_in, c_out, 2, 16, **norm) if fused else MBConv(
                    c_in, c_out, 2, 16, fewer_norm=True, **norm)
                blocks = [Residual(FusedMBConv(c_out, c_out, 1, 4, **norm) if fused else MBConv(
                    c_out, c_out, 1, 4, fewer_norm=True, **norm), drop_path=next(dpr)) for _ in range(depth)]
            else:  # the downsampling MBConv counts towards the depth
                down = MBConv(c_in, c_out, 2, 4, **norm)
                blocks = [Residual(MBConv(c_out, c_out, 1, 4, **norm), drop_path=next(dpr)) for _ in range(depth - 1)]
            # a stride-2 downsampling block (no shortcut), then residual blocks
            self.stages.append(PyramidStage([Residual(down, shortcut=False), *blocks]))
        self.set_stage_features(self.num_features, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)


@CLS_MODELS.register_module()
class EfficientViTClsHead(ClsHead):
    """The authors' classifier: 1x1 conv + BN + act on the last map, global average pooling, then
    linear (no bias) + LayerNorm + act + dropout + linear.

    Args:
        num_classes: classes of the final linear layer.
        in_channels: channels of the backbone's last map.
        widths: (conv width, hidden width), e.g. (1024, 1280) for B0.
        norm_eps: eps of the BN and the LayerNorm (1e-5 B-series, 1e-7 L-series).
        act_cfg: the activation (Hardswish B-series, tanh-GELU L-series).
    """

    def __init__(self, num_classes: int, in_channels: int, widths: Sequence[int], norm_eps: float = 1e-5,
                 act_cfg: dict = dict(type='HSwish'), dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_conv = conv(in_channels, widths[0], 1, norm_eps=norm_eps, act_cfg=act_cfg)
        self.hidden = nn.Linear(widths[0], widths[1], bias=False)
        self.norm = nn.LayerNorm(widths[1], eps=norm_eps)
        self.act = build_activation_layer(act_cfg)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[1], num_classes)

    def pre_logits(self, feats: Tuple[Tensor]) -> Tensor:
        x = self.in_conv(feats[-1]).mean((2, 3))  # B, widths[0]
        return self.act(self.norm(self.hidden(x)))  # B, widths[1]

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        return self.fc(self.dropout(self.pre_logits(feats)))
