"""CoaT: co-scale conv-attentional image transformers.

Xu et al., "Co-Scale Conv-Attentional Image Transformers", ICCV 2021, https://arxiv.org/abs/2104.06399.

What it changes: (1) *conv-attention*: factorized attention ``q (softmax(k)^T v)``, linear in the
token count, plus a convolutional relative position encoding ``q * DepthwiseConv(v)`` (different
windows for different head groups) and a depth-wise conv position encoding in front of every
block (Sec. 4); (2) *co-scale*: four serial stages (strides 4..32, each with its own class token)
followed, in CoaT (not CoaT-Lite), by parallel blocks that run attention on scales 2-4 at once and
exchange information between them by up/down-sampling the attention outputs (Sec. 5, Fig. 4).
The classifier aggregates the class tokens of scales 2-4 with a 1x1 conv.

Module names follow the authors' release / timm's ``coat_*``; the per-scale modules are lists here
(``serial_blocks.0`` for ``serial_blocks1``) and mmcv's ``PatchEmbed`` says ``projection``.
"""
from types import MappingProxyType
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn

from mmeff.registry import register_backbone

from ..layers.vit_blocks import Mlp
from .base import PyramidBackbone

BLOCK_NORM_EPS = 1e-6


def to_map(tokens: Tensor, hw: Tuple[int, int]) -> Tensor:
    """Image tokens [B, HW, C] (class token removed) -> [B, C, H, W]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *hw)


class ConvPosEnc(nn.Module):
    """Convolutional position encoding: ``x + DepthwiseConv3x3(x)`` on the image tokens (class token
    untouched), shared by all serial blocks of a scale."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        # x: B, 1 + HW, C
        feat = to_map(x[:, 1:], hw)
        return torch.cat([x[:, :1], (self.proj(feat) + feat).flatten(2).transpose(1, 2)], dim=1)


class ConvRelPosEnc(nn.Module):
    """Convolutional relative position encoding ``q * DepthwiseConv(v)`` (Eq. 7): head groups get
    windows of different sizes (``{window: heads}``); zero for the class token."""

    def __init__(self, head_dim: int, windows: Mapping[int, int]):
        super().__init__()
        self.channel_splits = [heads * head_dim for heads in windows.values()]
        self.conv_list = nn.ModuleList([
            nn.Conv2d(c, c, window, padding=window // 2, groups=c) for window, c in zip(windows, self.channel_splits)])

    def forward(self, q: Tensor, v: Tensor, hw: Tuple[int, int]) -> Tensor:
        B, heads, N, head_dim = q.shape
        v_img = v[:, :, 1:].transpose(-1, -2).reshape(B, heads * head_dim, *hw)  # B, C, H, W
        conv_v = torch.cat([conv(part) for conv, part in zip(self.conv_list, v_img.split(self.channel_splits, 1))], 1)
        conv_v = conv_v.reshape(B, heads, head_dim, N - 1).transpose(-1, -2)  # B, heads, HW, head_dim
        return F.pad(q[:, :, 1:] * conv_v, (0, 0, 1, 0))  # B, heads, N, head_dim


class FactorAttnConvRelPosEnc(nn.Module):
    """Conv-attention: factorized attention ``q (softmax_N(k)^T v) / sqrt(d)`` + the conv relative
    position encoding (Eq. 6-8); ``crpe`` is shared by the blocks of a scale."""

    def __init__(self, dim: int, num_heads: int, crpe: ConvRelPosEnc, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.crpe = crpe

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # B, heads, N, d each
        context = k.softmax(dim=2).transpose(-1, -2) @ v  # B, heads, d, d: the cost is linear in N
        x = self.scale * (q @ context) + self.crpe(q, v, hw)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class SerialBlock(nn.Module):
    """``x = cpe(x)``, then pre-norm conv-attention and MLP with residuals."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, cpe: ConvPosEnc, crpe: ConvRelPosEnc,
                 drop_path: float = 0.0):
        super().__init__()
        self.cpe = cpe
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.factoratt_crpe = FactorAttnConvRelPosEnc(dim, num_heads, crpe)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = Mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        # x: B, 1 + HW, C
        x = self.cpe(x, hw)
        x = x + self.drop_path(self.factoratt_crpe(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def resize_tokens(x: Tensor, hw: Tuple[int, int], factor: float) -> Tensor:
    """Bilinearly rescale the image tokens of ``x`` [B, 1 + HW, C] by ``factor``; class token kept."""
    img = F.interpolate(to_map(x[:, 1:], hw), scale_factor=factor, mode='bilinear', align_corners=False,
                        recompute_scale_factor=False)
    return torch.cat([x[:, :1], img.flatten(2).transpose(1, 2)], dim=1)


class ParallelBlock(nn.Module):
    """Co-scale block on scales 2-4 (equal widths): conv-attention per scale, then each scale adds the
    others' attention outputs resized to its grid (Fig. 4, direct cross-layer attention variant),
    then a per-scale pre-norm MLP (one MLP shared by the scales, as the authors do)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, crpes: Sequence[ConvRelPosEnc],
                 drop_path: float = 0.0):
        super().__init__()
        self.norms1 = nn.ModuleList([nn.LayerNorm(dim, eps=BLOCK_NORM_EPS) for _ in crpes])
        self.attns = nn.ModuleList([FactorAttnConvRelPosEnc(dim, num_heads, crpe) for crpe in crpes])
        self.norms2 = nn.ModuleList([nn.LayerNorm(dim, eps=BLOCK_NORM_EPS) for _ in crpes])
        self.mlp = Mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, xs: List[Tensor], hws: List[Tuple[int, int]]) -> List[Tensor]:
        attn = [a(n(x), hw) for a, n, x, hw in zip(self.attns, self.norms1, xs, hws)]
        mixed = []
        for i in range(len(xs)):  # scale i has stride 2**i times the first one's
            mixed.append(sum(attn[i] if j == i else resize_tokens(attn[j], hws[j], 2.0 ** (j - i))
                             for j in range(len(xs))))
        xs = [x + self.drop_path(m) for x, m in zip(xs, mixed)]
        return [x + self.drop_path(self.mlp(n(x))) for x, n in zip(xs, self.norms2)]


@register_backbone
class CoaT(PyramidBackbone):
    """CoaT / CoaT-Lite backbone: 4 serial stages at strides 4, 8, 16, 32 (+ parallel blocks in CoaT).

    Args:
        arch: 'tiny', 'mini', 'small', 'lite_tiny', 'lite_mini', 'lite_small' or a dict with
            ``embed_dims``, ``serial_depths``, ``parallel_depth`` and ``mlp_ratios``.
        num_heads: attention heads at every scale.
        crpe_windows: conv relative position encoding windows, ``{window: heads}``.
        out_type: 'featmap' returns the image tokens of ``out_indices`` as NCHW maps (after the
            parallel blocks, which update scales 2-4; the maps detection necks take); 'cls_token'
            returns the classifier's feature: the normalized class token of the last scale
            (CoaT-Lite) or the 1x1-conv aggregate of those of scales 2-4 (CoaT).
        out_indices: scales to return with ``out_type='featmap'`` (0..3); with 'cls_token' the last one.
        drop_path_rate: stochastic depth, the same in every block (as the authors train it).

    No freezing: the parallel blocks belong to scales 2-4 at once, so "the first k stages" are not
    separable modules.
    """
    # Table 1 of the paper: CoaT (serial + parallel) and CoaT-Lite (serial only).
    arch_zoo = {
        'tiny': dict(embed_dims=(152, 152, 152, 152), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                     mlp_ratios=(4, 4, 4, 4)),
        'mini': dict(embed_dims=(152, 216, 216, 216), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                     mlp_ratios=(4, 4, 4, 4)),
        'small': dict(embed_dims=(152, 320, 320, 320), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                      mlp_ratios=(4, 4, 4, 4)),
        'lite_tiny': dict(embed_dims=(64, 128, 256, 320), serial_depths=(2, 2, 2, 2), parallel_depth=0,
                          mlp_ratios=(8, 8, 4, 4)),
        'lite_mini': dict(embed_dims=(64, 128, 320, 512), serial_depths=(2, 2, 2, 2), parallel_depth=0,
                          mlp_ratios=(8, 8, 4, 4)),
        'lite_small': dict(embed_dims=(64, 128, 320, 512), serial_depths=(3, 4, 6, 3), parallel_depth=0,
                           mlp_ratios=(8, 8, 4, 4)),
    }
    input_multiple = 32  # the co-scale resizing needs exact 2x grids
    out_types = ('featmap', 'cls_token')

    def __init__(self, arch: Union[str, Mapping] = 'lite_tiny', num_heads: int = 8,
                 crpe_windows: Mapping[int, int] = MappingProxyType({3: 2, 5: 3, 7: 3}), out_type: str = 'featmap',
                 out_indices: Sequence[int] = (0, 1, 2, 3), drop_path_rate: float = 0.0,
                 init_cfg: Optional[Union[dict, List[dict]]] = (
                     dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
                     dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0))):
        super().__init__(init_cfg=list(init_cfg) if isinstance(init_cfg, (list, tuple)) else init_cfg)
        arch = self.resolve_arch(arch)
        dims, depths, mlp_ratios = arch['embed_dims'], arch['serial_depths'], arch['mlp_ratios']
        self.parallel_depth = arch['parallel_depth']
        # one feature vector, from the last scale(s), whatever out_indices say
        self.set_out_indices(out_indices if out_type == 'featmap' else -1, len(dims), out_type)
        if sum(crpe_windows.values()) != num_heads:
            raise ValueError(f'crpe_windows {dict(crpe_windows)} must split all {num_heads} heads')
        if self.parallel_depth and len(set(dims[1:])) != 1:
            raise ValueError(f'parallel blocks need equal widths at scales 2-4, got {dims[1:]}')
        self.num_features = list(dims)

        self.patch_embeds = nn.ModuleList([
            PatchEmbed(c_in, c_out, kernel_size=p, stride=p, norm_cfg=dict(type='LN'))
            for c_in, c_out, p in zip((3, *dims[:-1]), dims, (4, 2, 2, 2))])
        self.cls_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, 1, c)) for c in dims])
        self.cpes = nn.ModuleList([ConvPosEnc(c) for c in dims])
        self.crpes = nn.ModuleList([ConvRelPosEnc(c // num_heads, crpe_windows) for c in dims])
        self.serial_blocks = nn.ModuleList([
            nn.ModuleList([SerialBlock(c, num_heads, r, cpe, crpe, drop_path_rate) for _ in range(d)])
            for c, d, r, cpe, crpe in zip(dims, depths, mlp_ratios, self.cpes, self.crpes)])
        self.parallel_blocks = nn.ModuleList([
            ParallelBlock(dims[1], num_heads, mlp_ratios[1], self.crpes[1:], drop_path_rate)
            for _ in range(self.parallel_depth)])
        if out_type == 'cls_token':
            head_scales = 3 if self.parallel_depth else 1
            self.norms = nn.ModuleList([nn.LayerNorm(dims[-1], eps=BLOCK_NORM_EPS) for _ in range(head_scales)])
            self.aggregate = nn.Conv1d(head_scales, 1, 1) if self.parallel_depth else None
        self.set_stage_features(dims, (4, 8, 16, 32))

    def init_weights(self) -> None:
        super().init_weights()
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            return  # the tokens were loaded
        for token in self.cls_tokens:
            trunc_normal_(token, std=0.02)

    def forward_serial(self, x: Tensor) -> Tuple[List[Tensor], List[Tuple[int, int]]]:
        """Images -> the tokens [B, 1 + HW, C] and grids of the 4 scales after their serial blocks."""
        xs, hws = [], []
        for i, (embed, cls_token, blocks) in enumerate(zip(self.patch_embeds, self.cls_tokens, self.serial_blocks)):
            x, hw = embed(x if i == 0 else to_map(xs[-1][:, 1:], hws[-1]))  # B, HW, C
            x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            for block in blocks:
                x = block(x, hw)
            xs.append(x)
            hws.append(hw)
        return xs, hws

    # NOTE: PyramidBackbone's stage loop does not fit: the parallel blocks update scales 2-4 together
    # after all serial stages, so a scale's output is known only at the end.
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        self.check_input(x)
        xs, hws = self.forward_serial(x)
        for block in self.parallel_blocks:
            coarse = [cpe(x, hw) for cpe, x, hw in zip(self.cpes[1:], xs[1:], hws[1:])]
            xs = xs[:1] + block(coarse, hws[1:])
        if self.out_type == 'featmap':
            return tuple(to_map(xs[i][:, 1:], hws[i]) for i in self.out_indices)
        tokens = [norm(x[:, 0]) for norm, x in zip(self.norms, xs[-len(self.norms):])]  # B, C each
        if self.aggregate is None:
            return (tokens[0], )
        return (self.aggregate(torch.stack(tokens, dim=1)).squeeze(1), )  # B, C
