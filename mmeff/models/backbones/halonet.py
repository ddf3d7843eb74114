"""HaloNet: scaling local self-attention for parameter efficient visual backbones
(Vaswani et al., CVPR 2021, https://arxiv.org/abs/2103.12731).

A ResNet whose spatial convolutions are all replaced by blocked local self-attention with a halo:
the map is cut into non-overlapping b x b query blocks, and every query of a block attends to the
same (b + 2h) x (b + 2h) window, the block grown by a halo of h pixels. Sharing one window per block
(instead of one per pixel, as sliding-window attention does) turns the gather into one im2col (unfold).
Attention logits add relative position embeddings (one table for row offsets, one for column
offsets). A stride-2 attention (first block of stages 2-4) keeps every second query of each block.

Any input size (here: multiples of 32, so that the pyramid strides are exact): the authors' version
needs every stage's map to be a multiple of b, i.e. inputs divisible by 64 (256 for b = 8 at
stride 32), which 224 is not. Here a map is zero-padded (bottom/right) to a multiple of b, and
every key outside the real map -- the padding and the halo beyond the border -- is masked out of
the softmax. Padding therefore changes nothing: each query attends to exactly the real pixels of its
block's window, for every input size. At 224 the last stage (7x7) is one padded 8x8 block, whose
window covers the whole map: global attention with relative positions.

Sizes (the paper's H0-H2): stage widths w = 64, 128, 256, 512; a block is 1x1 conv (to w), halo
attention (values of rv * w channels, 8 heads), 1x1 conv to rb * w outputs; depths 3, 3, l3, 3.
"""
import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from torch import nn

from mmeff.registry import register_backbone

from .base import PyramidBackbone


class HaloAttention(nn.Module):
    """Blocked local self-attention with a halo and relative position logits.

    ``forward(x: [B, C, H, W]) -> [B, value_dim, ceil(H / stride), ceil(W / stride)]``.

    Args:
        in_channels: C of the input map.
        value_dim: output channels (the values' width); queries and keys have ``qk_dim`` (default C).
        num_heads: attention heads (queries, keys and values split evenly).
        block_size: b, the side of a query block (even when ``stride=2``).
        halo_size: h, the halo around a block: keys come from a (b + 2h)^2 window.
        stride: 2 keeps every second query (row and column) of each block.
    """

    def __init__(self, in_channels: int, value_dim: int, num_heads: int = 8, block_size: int = 8,
                 halo_size: int = 3, stride: int = 1, qk_dim: Optional[int] = None, qkv_bias: bool = False):
        super().__init__()
        qk_dim = qk_dim or in_channels
        if qk_dim % num_heads or value_dim % num_heads:
            raise ValueError(f'HaloAttention: qk_dim={qk_dim} and value_dim={value_dim} must be divisible by '
                             f'num_heads={num_heads}')
        if stride not in (1, 2) or block_size % stride:
            raise ValueError(f'HaloAttention: stride must be 1 or 2 and divide block_size={block_size}, '
                             f'got {stride}')
        self.num_heads, self.block_size, self.halo_size, self.stride = num_heads, block_size, halo_size, stride
        self.qk_dim, self.value_dim = qk_dim, value_dim
        self.q = nn.Conv2d(in_channels, qk_dim, 1, bias=qkv_bias)
        self.kv = nn.Conv2d(in_channels, qk_dim + value_dim, 1, bias=qkv_bias)
        head_dim = qk_dim // num_heads
        self.scale = head_dim**-0.5
        # A key lies (u - h) - i*stride rows from its query (u: window row, i: query row in the block),
        # an offset in [-(b + h - 1), b + h - 1].
        num_offsets = 2 * (block_size + halo_size) - 1
        self.rel_height = nn.Parameter(torch.randn(num_offsets, head_dim) * self.scale)
        self.rel_width = nn.Parameter(torch.randn(num_offsets, head_dim) * self.scale)
        query_pos = torch.arange(0, block_size, stride)
        key_pos = torch.arange(block_size + 2 * halo_size) - halo_size
        self.register_buffer('rel_index', key_pos[None, :] - query_pos[:, None] + block_size + halo_size - 1,
                             persistent=False)  # block_size // stride, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        b, h, s, heads = self.block_size, self.halo_size, self.stride, self.num_heads
        win, bq = b + 2 * h, b // s  # window side, query-block side
        nh, nw = math.ceil(H / b), math.ceil(W / b)  # blocks per column / row
        pad = [0, nw * b - W, 0, nh * b - H]
        # queries: B*heads, blocks, bq*bq, d
        q = F.pad(self.q(x), pad)[:, :, ::s, ::s]
        q = q.reshape(B * heads, -1, nh, bq, nw, bq).permute(0, 2, 4, 3, 5, 1)
        q = q.reshape(B * heads, nh * nw, bq * bq, -1)
        # keys and values: the window of each block, B*heads, blocks, win*win, d
        halo_pad = [h, pad[1] + h, h, pad[3] + h]
        # (F.unfold, im2col, rather than Tensor.unfold: it exports to ONNX)
        kv = F.unfold(F.pad(self.kv(x), halo_pad), win, stride=b).reshape(B, -1, win * win, nh * nw)

        def windows(t: torch.Tensor) -> torch.Tensor:  # B, C', win*win, blocks -> B*heads, blocks, win*win, d
            t = t.reshape(B, heads, -1, win * win, nh * nw).permute(0, 1, 4, 3, 2)
            return t.reshape(B * heads, nh * nw, win * win, -1)

        k, v = windows(kv[:, :self.qk_dim]), windows(kv[:, self.qk_dim:])
        # relative position logits q . (r_row + r_col): blocks share them (all offsets are block-local)
        q_grid = q.reshape(B * heads, nh * nw, bq, bq, -1)
        rows = torch.einsum('nbyxd,yud->nbyxu', q_grid, self.rel_height[self.rel_index])
        cols = torch.einsum('nbyxd,xvd->nbyxv', q_grid, self.rel_width[self.rel_index])
        bias = (rows[..., :, None] + cols[..., None, :]).reshape(B * heads, nh * nw, bq * bq, win * win)
        # keys outside the real map (padding, halo beyond the border) get -inf
        real = F.unfold(F.pad(x.new_ones(1, 1, H, W), halo_pad), win, stride=b)  # 1, win*win, blocks
        bias = bias.masked_fill(real.transpose(1, 2).reshape(1, nh * nw, 1, win * win) == 0, float('-inf'))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # B*heads, blocks, bq*bq, d
        out = out.reshape(B, heads, nh, nw, bq, bq, -1).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(B, self.value_dim, nh * bq, nw * bq)
        return out[:, :, :math.ceil(H / s), :math.ceil(W / s)]


class HaloBottleneck(nn.Module):
    """ResNet bottleneck with halo attention in place of the 3x3 conv:
    1x1 conv (BN, ReLU), halo attention (BN, ReLU), 1x1 conv (BN), + shortcut, ReLU."""

    def __init__(self, in_channels: int, width: int, value_dim: int, out_channels: int, stride: int,
                 num_heads: int, block_size: int, halo_size: int):
        super().__init__()
        norm_cfg, act_cfg = dict(type='BN'), dict(type='ReLU')
        self.conv1 = ConvModule(in_channels, width, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.attn = HaloAttention(width, value_dim, num_heads, block_size, halo_size, stride)
        self.norm2 = build_norm_layer(norm_cfg, value_dim)[1]
        self.act = build_activation_layer(act_cfg)
        self.conv3 = ConvModule(value_dim, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        if stride > 1 or in_channels != out_channels:
            self.shortcut = ConvModule(in_channels, out_channels, 1, stride, norm_cfg=norm_cfg, act_cfg=None)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm2(self.attn(self.conv1(x))))
        return self.act(self.conv3(out) + self.shortcut(x))


@register_backbone
class HaloNet(PyramidBackbone):
    """HaloNet backbone, https://arxiv.org/abs/2103.12731.

    Args:
        arch: ``'h0'``, ``'h1'``, ``'h2'`` (the paper's HaloNet-H0/H1/H2) or a dict with
            ``block_size`` (b), ``halo_size`` (h), ``rv`` (value width / stage width), ``rb`` (output
            width / stage width) and ``l3`` (depth of the third stage).
        out_indices: stages to return (0..3: strides 4, 8, 16, 32), as NCHW maps.
        num_heads: attention heads of every block.
        freeze_at, freeze_norm: freeze the stem and that many stages, turn the BatchNorms frozen
            (:meth:`PyramidBackbone.freeze`); default: nothing.
    """
    arch_zoo = {
        'h0': dict(block_size=8, halo_size=3, rv=1.0, rb=0.5, l3=7),
        'h1': dict(block_size=8, halo_size=3, rv=1.0, rb=1.0, l3=10),
        'h2': dict(block_size=8, halo_size=3, rv=1.0, rb=1.25, l3=11),
    }
    stage_widths = (64, 128, 256, 512)
    input_multiple = 32

    def __init__(self,
                 arch: Union[str, Mapping] = 'h0',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (3, ),
                 num_heads: int = 8,
                 freeze_at: int = -1,
                 freeze_norm: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg or [dict(type='Kaiming', layer='Conv2d', mode='fan_out'),
                                               dict(type='Constant', layer='_BatchNorm', val=1.0)])
        arch = self.resolve_arch(arch)
        depths = (3, 3, arch['l3'], 3)
        self.set_out_indices(out_indices, len(depths))
        norm_cfg = dict(type='BN')
        self.stem = nn.Sequential(
            ConvModule(in_channels, 64, 7, 2, 3, norm_cfg=norm_cfg), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.ModuleList()
        channels = 64
        for i, (width, depth) in enumerate(zip(self.stage_widths, depths)):
            out_channels = int(width * arch['rb'])
            blocks = []
            for j in range(depth):
                blocks.append(
                    HaloBottleneck(channels, width, int(width * arch['rv']), out_channels,
                                   stride=2 if i > 0 and j == 0 else 1, num_heads=num_heads,
                                   block_size=arch['block_size'], halo_size=arch['halo_size']))
                channels = out_channels
            self.stages.append(nn.Sequential(*blocks))
        self.set_stage_features([int(w * arch['rb']) for w in self.stage_widths], (4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)

    def init_weights(self):
        super().init_weights()
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            for m in self.modules():  # each residual block starts as the identity (zero last BN)
                if isinstance(m, HaloBottleneck):
                    nn.init.zeros_(m.conv3.bn.weight)
