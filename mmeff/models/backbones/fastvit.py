"""FastViT: a hybrid vision transformer built from re-parameterizable convolutional blocks.

Vasu et al., "FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization", ICCV 2023,
https://arxiv.org/abs/2303.14189.

What the model changes (Sec. 3): a MetaFormer whose token mixer in the first three stages is RepMixer, a
depth-wise conv mixer trained with a BatchNorm'd skip branch (x + ls * (mixer(x) - norm(x))) that folds
into a single depth-wise conv for inference, removing the skip connection; stem, downsampling and the
classification conv are MobileOne blocks (parallel kxk, 1x1 and identity-BN branches fused after
training); downsampling is a large (7x7) depth-wise kernel with a small (3x3) re-parameterizable branch;
the SA variants use self-attention in the last stage, preceded by a conditional position encoding (a
depth-wise 7x7 conv, whose skip also folds into the kernel). Every block keeps the NCHW layout; LayerScale
scales channels (dim 1), so the attention stage takes NCHW maps as the conv stages do.

``switch_to_deploy`` (``mmeff.models.layers.reparam``) fuses every re-parameterizable block; the
train-time (unfused) layout is timm's, so timm's weights load as they are. Inputs are multiples of 32,
so that the four maps have exact strides 4-32 (the attention is global and takes any grid).
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.utils import LayerScale, SELayer

from mmeff.registry import register_backbone

from ..layers.fuse import bn_kernel, conv_bn_kernel, fused_conv, identity_kernel, merge_branches
from ..layers.reparam import Reparameterizable
from .base import PyramidBackbone

BN = dict(type='BN')


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> ConvModule:
    return ConvModule(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                      norm_cfg=BN, act_cfg=None)


class MobileOneBlock(nn.Module, Reparameterizable):
    """MobileOne block (Vasu et al., arXiv 2206.04040): ``act(se(sum of branches))``.

    Branches at training time: ``num_conv_branches`` kxk conv-BN, a 1x1 conv-BN (``use_scale_branch``, k > 1)
    and a BN of the input (when the shape is kept); one kxk conv with bias after ``switch_to_deploy``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 use_act: bool = True, use_se: bool = False, use_scale_branch: bool = True,
                 num_conv_branches: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.groups = kernel_size, groups
        self.identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.conv_kxk = nn.ModuleList(
            conv_bn(in_channels, out_channels, kernel_size, stride, groups) for _ in range(num_conv_branches))
        self.conv_scale = conv_bn(in_channels, out_channels, 1, stride, groups) \
            if kernel_size > 1 and use_scale_branch else None
        # squeeze-excitation with a 1/16 bottleneck (not rounded to 8 channels)
        self.se = SELayer(out_channels, squeeze_channels=round(out_channels / 16)) if use_se else nn.Identity()
        self.act = nn.GELU() if use_act else nn.Identity()
        self.reparam_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = sum(branch(x) for branch in self.conv_kxk) if len(self.conv_kxk) else 0
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(self.se(out))

    def fused_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The (kernel, bias) of the single conv equal to all the branches."""
        branches = [conv_bn_kernel(branch) for branch in self.conv_kxk]
        if self.conv_scale is not None:
            branches.append(conv_bn_kernel(self.conv_scale))
        if self.identity is not None:
            branches.append(bn_kernel(self.identity, self.groups, self.kernel_size))
        return merge_branches(branches, self.kernel_size)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.reparam_conv is not None:
            return
        template = self.conv_kxk[0].conv if len(self.conv_kxk) else nn.Conv2d(
            self.identity.num_features, self.identity.num_features, 1, groups=self.groups)
        self.reparam_conv = fused_conv(template, *self.fused_kernel_bias())
        self.conv_kxk, self.conv_scale, self.identity = nn.ModuleList(), None, None


class ReparamLargeKernelConv(nn.Module, Reparameterizable):
    """A large kxk conv-BN plus a small (3x3) conv-BN branch (RepLKNet, arXiv 2203.06717); one conv after fusing."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
                 small_kernel: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.large_conv = conv_bn(in_channels, out_channels, kernel_size, stride, groups)
        self.small_conv = conv_bn(in_channels, out_channels, small_kernel, stride, groups)
        self.reparam_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.large_conv(x) + self.small_conv(x)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel, bias = merge_branches([conv_bn_kernel(self.large_conv), conv_bn_kernel(self.small_conv)])
        self.reparam_conv = fused_conv(self.large_conv.conv, kernel, bias)
        del self.large_conv, self.small_conv


class PatchEmbed(nn.Module):
    """Stride-2 downsampling: a depth-wise 7x7 (+3x3) conv to the new width, then a 1x1 MobileOne block."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int = 7, stride: int = 2) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            # the original model has no activation after the large-kernel conv
            ReparamLargeKernelConv(in_channels, out_channels, patch_size, stride, groups=in_channels),
            MobileOneBlock(out_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class RepMixer(nn.Module, Reparameterizable):
    """``x + ls * (mixer(x) - norm(x))``: depth-wise MobileOne mixing minus a BN of the input.

    At inference the skip, both BNs and the LayerScale fold into one depth-wise conv: the block becomes
    a plain conv with no residual add (the memory access the paper removes).
    """

    def __init__(self, dim: int, kernel_size: int = 3, layer_scale_init_value: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.norm = MobileOneBlock(dim, dim, kernel_size, groups=dim, use_act=False, use_scale_branch=False,
                                   num_conv_branches=0)
        self.mixer = MobileOneBlock(dim, dim, kernel_size, groups=dim, use_act=False)
        self.layer_scale = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.reparam_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.reparam_conv is not None:
            return
        mixer_k, mixer_b = self.mixer.fused_kernel_bias()
        norm_k, norm_b = self.norm.fused_kernel_bias()
        scale = self.layer_scale.weight
        kernel = identity_kernel(self.dim, self.dim, self.kernel_size, scale) + \
            scale.reshape(-1, 1, 1, 1) * (mixer_k - norm_k)
        self.reparam_conv = fused_conv(self.mixer.conv_kxk[0].conv, kernel, scale * (mixer_b - norm_b))
        del self.mixer, self.norm, self.layer_scale


class RepCPE(nn.Module, Reparameterizable):
    """Conditional position encoding (Chu et al., arXiv 2102.10882): ``x + dwconv7x7(x)``, one conv once fused."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.pos_enc = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.reparam_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.pos_enc(x)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.reparam_conv is not None:
            return
        weight = self.pos_enc.weight
        kernel = weight + identity_kernel(weight.shape[0], weight.shape[0], weight.shape[-1], weight)
        self.reparam_conv = fused_conv(self.pos_enc, kernel, self.pos_enc.bias)
        del self.pos_enc


class ConvMlp(nn.Module, Reparameterizable):
    """FFN with a depth-wise 7x7 conv-BN before the 1x1 expansion (the paper's ConvFFN); the BN folds
    into the conv for inference."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv = conv_bn(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if isinstance(self.conv, ConvModule):
            self.conv = fused_conv(self.conv.conv, *conv_bn_kernel(self.conv))


class Attention(nn.Module):
    """Global multi-head self-attention on an NCHW map (heads of ``head_dim`` channels)."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f'attention width {dim} is not a multiple of head_dim={head_dim}')
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B, N, C
        qkv = self.qkv(tokens).reshape(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))  # B, heads, N, head_dim
        out = self.proj(out.transpose(1, 2).reshape(B, H * W, C))
        return out.transpose(1, 2).reshape(B, C, H, W)


class RepMixerBlock(nn.Module):
    """``x = repmixer(x)``; ``x + ls * ffn(x)``."""

    def __init__(self, dim: int, mlp_ratio: float, kernel_size: int = 3, drop_path: float = 0.,
                 layer_scale_init_value: float = 1e-5) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size, layer_scale_init_value)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionBlock(nn.Module):
    """``x + ls1 * attn(BN(x))``, then ``x + ls2 * ffn(x)``, on NCHW maps (channel-wise LayerScale)."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0., layer_scale_init_value: float = 1e-5):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale(dim, layer_scale_init_value, data_format='channels_first')
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path(self.layer_scale_2(self.mlp(x)))


class FastViTStage(nn.Module):
    def __init__(self, downsample: nn.Module, pos_emb: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample, self.pos_emb = downsample, pos_emb
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


@register_backbone
class FastViT(PyramidBackbone):
    """FastViT backbone (https://arxiv.org/abs/2303.14189), 4 stages at strides 4, 8, 16, 32.

    Args:
        arch: 't8', 't12', 's12', 'sa12', 'sa24', 'sa36', 'ma36', or a dict with ``embed_dims``, ``depths``,
            ``mlp_ratio`` and ``token_mixers`` (per stage 'repmixer' or 'attention'; attention stages get a
            conditional position encoding).
        out_indices: stages whose maps are returned (0..3).
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        layer_scale_init_value: initial LayerScale of the residual branches.
        final_conv: apply the classification model's last MobileOne block (3x3 depth-wise to
            ``cls_ratio`` x width, squeeze-excitation, GELU) to the last stage's map; its channels
            become ``cls_ratio * embed_dims[-1]``. Turn off to use the bare stage-4 map.
        cls_ratio: channel expansion of ``final_conv``.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        't8': dict(embed_dims=(48, 96, 192, 384), depths=(2, 2, 4, 2), mlp_ratio=3, token_mixers=('repmixer', ) * 4),
        't12': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), mlp_ratio=3, token_mixers=('repmixer', ) * 4),
        's12': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), mlp_ratio=4, token_mixers=('repmixer', ) * 4),
        'sa12': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), mlp_ratio=4,
                     token_mixers=('repmixer', ) * 3 + ('attention', )),
        'sa24': dict(embed_dims=(64, 128, 256, 512), depths=(4, 4, 12, 4), mlp_ratio=4,
                     token_mixers=('repmixer', ) * 3 + ('attention', )),
        'sa36': dict(embed_dims=(64, 128, 256, 512), depths=(6, 6, 18, 6), mlp_ratio=4,
                     token_mixers=('repmixer', ) * 3 + ('attention', )),
        'ma36': dict(embed_dims=(76, 152, 304, 608), depths=(6, 6, 18, 6), mlp_ratio=4,
                     token_mixers=('repmixer', ) * 3 + ('attention', )),
    }
    input_multiple = 32

    def __init__(self, arch: Union[str, dict] = 't8', out_indices: Sequence[int] = (3, ), drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-5, final_conv: bool = True, cls_ratio: float = 2.0,
                 freeze_at: int = -1, freeze_norm: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        embed_dims, depths = arch['embed_dims'], arch['depths']
        for mixer in arch['token_mixers']:
            if mixer not in ('repmixer', 'attention'):
                raise ValueError(f"token mixer {mixer!r}: use 'repmixer' or 'attention'")
        self.set_out_indices(out_indices, num_stages=len(depths))

        # stem: 3x3 stride-2 conv, 3x3 stride-2 depth-wise conv, 1x1 conv, all MobileOne blocks
        self.stem = nn.Sequential(
            MobileOneBlock(3, embed_dims[0], 3, stride=2),
            MobileOneBlock(embed_dims[0], embed_dims[0], 3, stride=2, groups=embed_dims[0]),
            MobileOneBlock(embed_dims[0], embed_dims[0], 1))

        dpr = self.drop_path_schedule(drop_path_rate, depths)
        self.stages = nn.ModuleList()
        for i, (dim, block_dpr, mixer) in enumerate(zip(embed_dims, dpr, arch['token_mixers'])):
            downsample = nn.Identity() if i == 0 else PatchEmbed(embed_dims[i - 1], dim)
            if mixer == 'attention':
                pos_emb = RepCPE(dim)
                blocks = [AttentionBlock(dim, arch['mlp_ratio'], p, layer_scale_init_value) for p in block_dpr]
            else:
                pos_emb = nn.Identity()
                blocks = [RepMixerBlock(dim, arch['mlp_ratio'], 3, p, layer_scale_init_value) for p in block_dpr]
            self.stages.append(FastViTStage(downsample, pos_emb, blocks))
        self.final_conv = MobileOneBlock(embed_dims[-1], int(embed_dims[-1] * cls_ratio), 3,
                                         groups=embed_dims[-1], use_se=True) if final_conv else None
        channels = list(embed_dims)
        if final_conv:
            channels[-1] = int(embed_dims[-1] * cls_ratio)
        self.set_stage_features(channels, (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def forward_out(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == self.num_stages - 1 and self.final_conv is not None:
            return self.final_conv(x)
        return x  # B, C_i, H/2^(i+2), W/2^(i+2)
