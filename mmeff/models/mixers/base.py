"""The multi-head frame shared by the attention-like token mixers.

Softmax attention and most of its efficient replacements share the same frame: project tokens to
queries, keys and values, split the channels into heads, attend, merge the heads, project back.
A mixer of this family only writes ``attend`` (its paper's method section). What every mixer
promises the ViT block, and may offer it beyond mixing, is ``TokenMixer`` (``layers.vit_blocks``).
"""
import math
from typing import Tuple

import torch
from mmengine.logging import print_log
from mmpretrain.models.utils import resize_pos_embed
from torch import nn

from ..layers.vit_blocks import HW, TokenMixer


class MultiHeadMixer(TokenMixer):
    """Base of the attention-like mixers: ``proj(attend(q, k, v))`` over ``num_heads`` heads."""

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim={embed_dim} must be divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(embed_dim, embed_dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, N, C] -> q, k, v, each [B, heads, N, head_dim]."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        """q, k, v: [B, heads, N, head_dim] -> [B, heads, N, head_dim]."""
        raise NotImplementedError

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """The heads' outputs [B, heads, N, head_dim] -> the projected tokens [B, N, C]."""
        B, _, N, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, -1)))

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        return self.merge_heads(self.attend(*self.split_qkv(x), hw))


def check_grid(hw: HW, grid_size: Tuple[int, int], mixer: str) -> None:
    """Raise a clear error when a mixer learned for one patch grid gets another."""
    if hw is None or tuple(hw) != tuple(grid_size):
        raise ValueError(f'{mixer} has weights for a {grid_size[0]}x{grid_size[1]} patch grid but got '
                         f'{hw}: the valid input size is grid x patch_size (e.g. 14x16 = 224 px); build '
                         'the model with the new img_size to fine-tune at another resolution')


def split_grid(x: torch.Tensor, hw: Tuple[int, int],
               num_prefix_tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """[B, P + h*w, C] -> prefix tokens [B, P, C] and the patch grid [B, h, w, C]."""
    prefix, patches = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
    return prefix, patches.reshape(x.shape[0], hw[0], hw[1], x.shape[-1])


def resize_token_param(param: torch.Tensor, grid_size: Tuple[int, int], num_prefix_tokens: int,
                       name: str) -> torch.Tensor:
    """A per-token parameter [1, P + h*w, C] of a checkpoint, bicubically resized to ``grid_size``.

    Mixers with weights per sequence position (Poly-SA's token weights, SLAB's key position
    encoding) load a checkpoint of another resolution as ViT loads its position embedding.
    """
    src_len = param.shape[1] - num_prefix_tokens
    src_side = math.isqrt(src_len)
    if src_side * src_side != src_len:
        raise ValueError(f'cannot resize {name} of {src_len} patch tokens: only square source grids are supported')
    if (src_side, src_side) != tuple(grid_size):
        print_log(f'resize {name} from grid {src_side}x{src_side} to {tuple(grid_size)}', logger='current')
    return resize_pos_embed(param, (src_side, src_side), tuple(grid_size), num_extra_tokens=num_prefix_tokens)
