"""Next-ViT: a hybrid CNN-Transformer built for deployment latency.

Li et al., "Next-ViT: Next Generation Vision Transformer for Efficient Deployment in Realistic
Industrial Scenarios", 2022, https://arxiv.org/abs/2207.05501.

What it changes: each stage is a run of Next Convolution Blocks (NCB: multi-head *convolutional*
attention, a grouped 3x3 conv per head, then a conv MLP) closed by Next Transformer Blocks (NTB:
efficient self-attention on spatially reduced keys/values for the high-frequency-blind global part,
concatenated with an MHCA branch for the local part). Normalization is BatchNorm throughout, so
the BN in front of every linear layer folds into it for inference (``switch_to_deploy``, Sec. 3.4).

Module names follow the authors' release (and timm's ``nextvit_*``) so that weights map 1:1; the
stem is mmcv's ``ConvModule`` (``bn`` where they say ``norm``, renamed by ``mmeff.converters.timm``).
"""
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, fuse_conv_bn
from mmcv.cnn.bricks import DropPath
from torch import Tensor, nn

from mmeff.registry import register_backbone

from ..layers.fuse import bn_affine, fold_affine_into
from ..layers.reparam import Reparameterizable
from .base import PyramidBackbone, PyramidStage


class Downsample(nn.Module):
    """The patch embedding in front of a block: 2x2 average pool (stride 2 only) + 1x1 conv + BN
    when the resolution or the width changes, identity otherwise."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if stride == 1 and in_channels == out_channels:
            self.pool = self.conv = self.norm = nn.Identity()
            return
        # averaging before the 1x1 conv is the cheap strided conv of Sec. 3.1
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if stride == 2 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(self.pool(x)))


class MHCA(nn.Module):
    """Multi-head convolutional attention: a grouped 3x3 conv (one group per head) + BN + ReLU, then a
    1x1 projection that mixes the heads (Eq. 1-2)."""

    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        self.group_conv3x3 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels // head_dim, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)
        self.projection = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.act(self.norm(self.group_conv3x3(x))))


class ConvMlp(nn.Module):
    """The blocks' MLP on NCHW maps: 1x1 conv, ReLU, 1x1 conv."""

    def __init__(self, channels: int, mlp_ratio: float):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class NCB(nn.Module, Reparameterizable):
    """Next Convolution Block: ``x + MHCA(x)``, then ``x + MLP(BN(x))`` (Fig. 2b)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, head_dim: int = 32,
                 mlp_ratio: float = 3.0, drop_path: float = 0.0):
        super().__init__()
        if out_channels % head_dim:
            raise ValueError(f'NCB width {out_channels} must be a multiple of head_dim={head_dim}')
        self.patch_embed = Downsample(in_channels, out_channels, stride)
        self.mhca = MHCA(out_channels, head_dim)
        self.attn_drop_path = DropPath(drop_path)
        self.norm = nn.BatchNorm2d(out_channels)
        self.mlp = ConvMlp(out_channels, mlp_ratio)
        self.mlp_drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # B, C, H, W
        x = x + self.attn_drop_path(self.mhca(x))
        return x + self.mlp_drop_path(self.mlp(self.norm(x)))

    def switch_to_deploy(self) -> None:
        if isinstance(self.norm, nn.BatchNorm2d):
            fold_affine_into(self.mlp.fc1, *bn_affine(self.norm))
            self.norm = nn.Identity()
            fuse_conv_bn(self)  # the BNs after the patch-embedding and MHCA convs


class EMHSA(nn.Module):
    """Efficient multi-head self-attention: keys and values from a token sequence average-pooled by
    ``sr_ratio ** 2`` (and BN-normalized), queries from every token (Eq. 3).

    The pooling runs over the flattened raster sequence, as in the authors' release that the
    published weights were trained with (a window of ``sr_ratio ** 2`` consecutive tokens).
    """

    def __init__(self, dim: int, head_dim: int = 32, sr_ratio: int = 1, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.AvgPool1d(sr_ratio ** 2, sr_ratio ** 2)
            self.norm = nn.BatchNorm1d(dim)
        else:
            self.sr = self.norm = None

    def split_heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # B, heads, N, head_dim

    def forward(self, x: Tensor) -> Tensor:
        # x: B, N, C
        q = self.split_heads(self.q(x))
        if self.sr is not None:
            x = self.norm(self.sr(x.transpose(1, 2))).transpose(1, 2)  # B, N / sr^2, C
        x = F.scaled_dot_product_attention(q, self.split_heads(self.k(x)), self.split_heads(self.v(x)))
        return self.proj(x.transpose(1, 2).flatten(2))  # B, N, C


def make_divisible(value: float, divisor: int) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class NTB(nn.Module, Reparameterizable):
    """Next Transformer Block (Fig. 2c): E-MHSA on a ``mix_block_ratio`` share of the channels, an
    MHCA branch on the rest computed from the attention output, concatenated, then the MLP."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, sr_ratio: int = 1,
                 head_dim: int = 32, mix_block_ratio: float = 0.75, mlp_ratio: float = 2.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.mhsa_channels = make_divisible(out_channels * mix_block_ratio, 32)
        self.mhca_channels = out_channels - self.mhsa_channels
        self.patch_embed = Downsample(in_channels, self.mhsa_channels, stride)
        self.norm1 = nn.BatchNorm2d(self.mhsa_channels)
        self.e_mhsa = EMHSA(self.mhsa_channels, head_dim, sr_ratio)
        self.mhsa_drop_path = DropPath(drop_path * mix_block_ratio)
        self.projection = Downsample(self.mhsa_channels, self.mhca_channels)
        self.mhca = MHCA(self.mhca_channels, head_dim)
        self.mhca_drop_path = DropPath(drop_path * (1 - mix_block_ratio))
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.mlp = ConvMlp(out_channels, mlp_ratio)
        self.mlp_drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # B, C1, H, W
        tokens = self.norm1(x).flatten(2).transpose(1, 2)  # B, HW, C1
        x = x + self.mhsa_drop_path(self.e_mhsa(tokens)).transpose(1, 2).reshape(x.shape)
        local = self.projection(x)  # B, C2, H, W
        local = local + self.mhca_drop_path(self.mhca(local))
        x = torch.cat([x, local], dim=1)  # B, C1 + C2, H, W
        return x + self.mlp_drop_path(self.mlp(self.norm2(x)))

    def switch_to_deploy(self) -> None:
        if not isinstance(self.norm1, nn.BatchNorm2d):
            return
        scale, shift = bn_affine(self.norm1)
        fold_affine_into(self.e_mhsa.q, scale, shift)
        if self.e_mhsa.norm is not None:
            # pooling is linear and per channel, so the two BNs around it compose into one affine map
            scale2, shift2 = bn_affine(self.e_mhsa.norm)
            scale, shift = scale * scale2, shift * scale2 + shift2
            self.e_mhsa.norm = nn.Identity()
        fold_affine_into(self.e_mhsa.k, scale, shift)
        fold_affine_into(self.e_mhsa.v, scale, shift)
        self.norm1 = nn.Identity()
        fold_affine_into(self.mlp.fc1, *bn_affine(self.norm2))
        self.norm2 = nn.Identity()
        fuse_conv_bn(self)  # the BNs after the patch-embedding, projection and MHCA convs


@register_backbone
class NextViT(PyramidBackbone, Reparameterizable):
    """Next-ViT backbone: a 4-conv stem (stride 4), then 4 stages at strides 4, 8, 16, 32.

    Args:
        arch: 'small', 'base', 'large' or a dict with ``depths``.
        stem_channels: widths of the stem convs (the last one repeats with stride 2).
        head_dim: channels per head of MHCA and E-MHSA.
        sr_ratios: E-MHSA key/value reduction per stage.
        mix_block_ratio: share of an NTB's channels that go through E-MHSA.
        out_indices: stages to return (0..3), NCHW maps at strides 4, 8, 16, 32; the last stage's map
            goes through the final BatchNorm.
        drop_path_rate: stochastic depth, linear over all blocks.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    # Table 1 of the paper: the sizes differ only in the depth of stage 3 (in repeats of 4 NCB + 1 NTB).
    arch_zoo = {
        'small': dict(depths=(3, 4, 10, 3)),
        'base': dict(depths=(3, 4, 20, 3)),
        'large': dict(depths=(3, 4, 30, 3)),
    }
    # the widths of the paper's Table 1: a stage's blocks as (type, width) repeats
    STAGE_WIDTHS = ((96, ), (192, 256), (384, 512), (768, 1024))
    input_multiple = 32  # every stage map is exactly H / stride

    def __init__(self, arch: Union[str, Mapping] = 'small', stem_channels: Sequence[int] = (64, 32, 64),
                 head_dim: int = 32, sr_ratios: Sequence[int] = (8, 4, 2, 1), mix_block_ratio: float = 0.75,
                 out_indices: Sequence[int] = (3, ), drop_path_rate: float = 0.1, freeze_at: int = -1,
                 freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = (
                     dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.0), )):
        super().__init__(init_cfg=list(init_cfg) if isinstance(init_cfg, (list, tuple)) else init_cfg)
        depths = self.resolve_arch(arch)['depths']
        if depths[2] % 5:
            raise ValueError(f'stage 3 repeats 4 NCB + 1 NTB, so its depth must be a multiple of 5, got {depths[2]}')
        self.set_out_indices(out_indices, num_stages=len(depths))
        self.num_features = [self.STAGE_WIDTHS[i][-1] for i in range(4)]

        self.stem = nn.Sequential(*[
            ConvModule(c_in, c_out, 3, stride=stride, padding=1, bias=False, norm_cfg=dict(type='BN'),
                       act_cfg=dict(type='ReLU', inplace=True))
            for c_in, c_out, stride in zip((3, *stem_channels), (*stem_channels, stem_channels[-1]), (2, 1, 1, 2))
        ])
        dpr = self.drop_path_schedule(drop_path_rate, depths)
        in_channels, stages = stem_channels[-1], []
        for i, depth in enumerate(depths):
            blocks = []
            for j, (kind, width) in enumerate(self.block_layout(i, depth)):
                stride = 2 if j == 0 and i > 0 else 1
                common = dict(stride=stride, head_dim=head_dim, drop_path=dpr[i][j])
                if kind == 'NCB':
                    blocks.append(NCB(in_channels, width, **common))
                else:
                    blocks.append(NTB(in_channels, width, sr_ratio=sr_ratios[i], mix_block_ratio=mix_block_ratio,
                                      **common))
                in_channels = width
            stages.append(PyramidStage(blocks))  # the first block changes width/resolution
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(in_channels)
        self.set_stage_features(self.num_features, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def block_layout(self, stage: int, depth: int) -> List[Tuple[str, int]]:
        """(block type, width) of every block of a stage, as in the paper's Table 1."""
        if stage == 0:
            return [('NCB', 96)] * depth
        conv_width, ntb_width = self.STAGE_WIDTHS[stage]
        if stage == 2:  # repeats of 4 NCB + 1 NTB
            return ([('NCB', conv_width)] * 4 + [('NTB', ntb_width)]) * (depth // 5)
        return [('NCB', conv_width)] * (depth - 1) + [('NTB', ntb_width)]

    def switch_to_deploy(self) -> None:
        """Fold the stem's BNs into their convs; each block folds its own (``reparam.switch_to_deploy``
        calls all of them). The final BN stays: it follows a residual sum."""
        fuse_conv_bn(self.stem)

    def forward_out(self, i: int, x: Tensor) -> Tensor:
        return self.norm(x) if i == self.num_stages - 1 else x
