"""STViT on Swin: Chang et al., "Making Vision Transformers Efficient from A Token Sparsification View",
CVPR 2023, https://arxiv.org/abs/2303.08685 (STViT-R, the variant that recovers the image tokens).

Image tokens are redundant in the middle of a hierarchical model. STViT replaces most blocks of Swin's third
stage by blocks on a few *semantic tokens*, cluster centers of the image tokens:

1. a Swin block (window attention) on the image tokens;
2. semantic token generation: every 7x7 window is max-pooled to 3x3 tokens (the spatial-pooling
   initialization of the cluster centers); as queries they attend to themselves and to the image tokens of a
   slightly enlarged region around their window, and the attention output, a weighted mean of image tokens,
   is the new center (no residual from the pooled query, as in the authors' models);
3. the semantic tokens attend to all semantic and image tokens;
4. two transformer blocks on the semantic tokens only (within a window, then across windows): 9 / 49 of
   the image tokens;
5. recovery: the image tokens of step 1 attend to the semantic tokens, which restores the full-resolution
   map for the next stage and for a detector.

A stage of depth 6k repeats this 6-block cycle k times (Swin-T: 1, Swin-S/B: 3). Stages 1, 2 and 4, the
patch embedding, merging and norms are MMPretrain's ``SwinTransformer`` unchanged (as ``LeanSwinTransformer``).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmpretrain.models.backbones.swin_transformer import SwinBlock
from mmpretrain.models.utils import CrossMultiheadAttention, LayerScale

from mmeff.registry import register_backbone

from ..layers.pyramid import stage_drop_path_rates
from ..layers.vit_blocks import Mlp
from .mmpretrain_lean import LeanSwinTransformer, make_lean

HW = Tuple[int, int]


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, window * window, C], windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C).transpose(2, 3)
    return x.reshape(-1, window * window, C)


def from_windows(x: torch.Tensor, window: int, hw: HW) -> torch.Tensor:
    """Inverse of ``to_windows``: [B * nW, window * window, C] -> [B, H, W, C]."""
    H, W = hw
    C = x.shape[-1]
    x = x.view(-1, H // window, W // window, window, window, C).transpose(2, 3)
    return x.reshape(-1, H, W, C)


class SemanticBlock(nn.Module):
    """Pre-norm transformer block whose queries may attend to other tokens (``context``).

    As in the authors' blocks, one LayerNorm normalizes queries and context, and LayerScale starts the
    residual branches near zero. With ``query_residual=False`` the attention output replaces the queries
    (a cluster-center update: the new center is the attention-weighted mean of the tokens).
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop_rate: float = 0., drop_path: float = 0., layer_scale_init_value: float = 1e-5,
                 query_residual: bool = True):
        super().__init__()
        self.query_residual = query_residual
        self.norm1 = nn.LayerNorm(embed_dims)
        # separate q and k/v projections: queries and keys come from different token sets
        self.attn = CrossMultiheadAttention(embed_dims, num_heads, qkv_bias=qkv_bias, proj_drop=drop_rate)
        self.ls1 = LayerScale(embed_dims, layer_scale_init_value)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, mlp_ratio, drop_rate)
        self.ls2 = LayerScale(embed_dims, layer_scale_init_value)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = self.norm1(x)  # B, N, C
        kv = q if context is None else self.norm1(context)  # B, M, C
        attn = self.drop_path(self.ls1(self.attn(q, kv, kv)))
        x = x + attn if self.query_residual else attn
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class SemanticTokenCycle(nn.Module):
    """One Swin block, semantic token generation (2 blocks), 2 semantic-token blocks, recovery."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, semantic_window_size: int,
                 region_size: int, drop_paths: Sequence[float], **block_kw):
        super().__init__()
        self.window_size, self.semantic_window_size, self.region_size = window_size, semantic_window_size, region_size
        self.swin_block = SwinBlock(embed_dims, num_heads, window_size, shift=False, drop_path=drop_paths[0])
        self.pooled_attention = SemanticBlock(embed_dims, num_heads, drop_path=drop_paths[1], query_residual=False,
                                              **block_kw)
        self.image_attention = SemanticBlock(embed_dims, num_heads, drop_path=drop_paths[2], **block_kw)
        self.local_block = SemanticBlock(embed_dims, num_heads, drop_path=drop_paths[3], **block_kw)
        self.global_block = SemanticBlock(embed_dims, num_heads, drop_path=drop_paths[4], **block_kw)
        self.recovery = SemanticBlock(embed_dims, num_heads, drop_path=drop_paths[5], **block_kw)

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """Image tokens around each window: [B, H, W, C] -> [B * nW, R * R, C].

        A window's region is the window enlarged to ``region_size`` and moved inside the map: at 14x14
        with 7x7 windows and R = 10 these are the authors' 10x10 crops at offsets 0 and 4.
        """
        B, H, W, C = x.shape
        w, r = self.window_size, self.region_size

        def starts(size):  # one start per window, centred on the window, clipped to the map
            span = min(r, size)
            first = torch.arange(0, size, w, device=x.device) - (span - w) // 2
            return first.clamp(0, size - span)[:, None] + torch.arange(span, device=x.device), span

        rows, rh = starts(H)  # nWh, Rh
        cols, rw = starts(W)  # nWw, Rw
        crops = x[:, rows][:, :, :, cols]  # B, nWh, Rh, nWw, Rw, C
        return crops.transpose(2, 3).reshape(-1, rh * rw, C)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        H, W = hw
        B, _, C = x.shape
        w, s = self.window_size, self.semantic_window_size
        x = self.swin_block(x, hw)  # B, H*W, C
        image = x.view(B, H, W, C)

        # spatial-pooling initialization: max over a window's sub-regions = adaptive pooling of the map
        grid = (H // w * s, W // w * s)
        pooled = F.adaptive_max_pool2d(image.permute(0, 3, 1, 2), grid).permute(0, 2, 3, 1)  # B, Hs, Ws, C
        pooled = to_windows(pooled, s)  # B*nW, s*s, C
        semantic = self.pooled_attention(pooled, torch.cat([pooled, self.regions(image)], dim=1))
        semantic = from_windows(semantic, s, grid).reshape(B, -1, C)  # B, Ns, C
        semantic = self.image_attention(semantic, torch.cat([semantic, x], dim=1))

        semantic = to_windows(semantic.view(B, *grid, C), s)  # B*nW, s*s, C
        semantic = from_windows(self.local_block(semantic), s, grid).reshape(B, -1, C)
        semantic = self.global_block(semantic)  # B, Ns, C
        return self.recovery(x, semantic)  # B, H*W, C


class SemanticTokenStage(BaseModule):
    """A Swin stage whose blocks are ``SemanticTokenCycle``s; same interface as ``SwinBlockSequence``."""

    def __init__(self, embed_dims: int, depth: int, num_heads: int, window_size: int, semantic_window_size: int,
                 region_size: int, drop_paths: List[float], downsample: Optional[nn.Module], stride: int,
                 **block_kw):
        super().__init__()
        if depth % 6:
            raise ValueError(f'an STViT stage repeats a cycle of 6 blocks: its depth must be a multiple of 6, '
                             f'got {depth}')
        self.embed_dims, self.window_size, self.stride = embed_dims, window_size, stride
        self.blocks = nn.ModuleList(
            SemanticTokenCycle(embed_dims, num_heads, window_size, semantic_window_size, region_size,
                               drop_paths[i:i + 6], **block_kw)
            for i in range(0, depth, 6))
        self.downsample = downsample

    def forward(self, x: torch.Tensor, in_shape: HW, do_downsample: bool = True):
        if in_shape[0] % self.window_size or in_shape[1] % self.window_size:
            multiple = self.stride * self.window_size
            raise ValueError(f'STViT needs whole {self.window_size}x{self.window_size} windows on its semantic-token '
                             f'stage, got a {in_shape} map: input sides must be multiples of {multiple} px '
                             f'(e.g. {2 * multiple}, {3 * multiple}, {4 * multiple})')
        for cycle in self.blocks:
            x = cycle(x, in_shape)
        if self.downsample is not None and do_downsample:
            return self.downsample(x, in_shape)
        return x, in_shape

    @property
    def out_channels(self):
        return self.downsample.out_channels if self.downsample else self.embed_dims


@register_backbone
class STViTSwin(LeanSwinTransformer):
    """Swin Transformer whose third stage computes on semantic tokens (STViT-R).

    Args:
        arch (str | dict): Swin size: 'tiny', 'small', 'base' (MMPretrain's table) or a dict.
        semantic_window_size (int): semantic tokens per side of a window (3: 9 per 7x7 window).
        region_size (int): side of the image-token region a window's pooled tokens attend to (10).
        layer_scale_init_value (float): LayerScale init of the semantic-token blocks (1e-5).
        Other arguments are ``SwinTransformer``'s (``img_size``, ``window_size``, ``drop_path_rate``,
        ``out_indices``, ``pad_small_map``, ...).
    """
    semantic_stage = 2  # the third stage, 14x14 tokens at 224 px

    def __init__(self, arch='tiny', img_size=224, patch_size=4, window_size=7, drop_rate=0., drop_path_rate=0.1,
                 semantic_window_size=3, region_size=10, layer_scale_init_value=1e-5, **kwargs):
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size, window_size=window_size,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kwargs)
        depths, i = self.depths, self.semantic_stage
        dpr = stage_drop_path_rates(drop_path_rate, depths)[i]  # Swin's linear rule
        self.stages[i] = SemanticTokenStage(
            self.embed_dims * 2**i, depths[i], self.num_heads[i], window_size, semantic_window_size, region_size,
            dpr, self.stages[i].downsample, patch_size * 2**i,
            drop_rate=drop_rate, layer_scale_init_value=layer_scale_init_value)
        make_lean(self.stages[i])
