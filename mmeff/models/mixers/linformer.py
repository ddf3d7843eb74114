"""Linformer: self-attention with linear complexity (Wang et al., https://arxiv.org/abs/2006.04768).

Keys and values are projected along the sequence, ``K' = E K`` and ``V' = F V`` with ``E, F`` of
shape ``[proj_len, N]``, so the attention map is ``N x proj_len`` instead of ``N x N``. ``E`` and
``F`` are shared by the heads of a layer ("headwise sharing").
"""
import math

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class LinformerAttention(MultiHeadMixer):
    """Softmax attention over keys and values projected to ``proj_len`` sequence positions.

    Args:
        num_tokens: the sequence length ``N`` the projections are learned for (given by the
            skeleton); checkpoints of another resolution are resized on loading.
        num_prefix_tokens: leading non-patch tokens (class token), kept apart when resizing.
        proj_len: ``k`` of the paper, the projected sequence length.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 num_tokens: int,
                 num_prefix_tokens: int = 1,
                 proj_len: int = 256,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.num_tokens = num_tokens
        self.num_prefix_tokens = num_prefix_tokens
        bound = proj_len**-0.5
        self.proj_k = nn.Parameter(torch.empty(proj_len, num_tokens).uniform_(-bound, bound))  # E
        self.proj_v = nn.Parameter(torch.empty(proj_len, num_tokens).uniform_(-bound, bound))  # F
        self._register_load_state_dict_pre_hook(self._resize_loaded_projections)

    def _resize_loaded_projections(self, state_dict, prefix, *args, **kwargs):
        """Interpolate ``E`` and ``F`` over the patch grid for a checkpoint of another resolution."""
        for name in ('proj_k', 'proj_v'):
            key = prefix + name
            if key not in state_dict or state_dict[key].shape[1] == self.num_tokens:
                continue
            proj = state_dict[key]  # k, N_src
            p = self.num_prefix_tokens
            src, dst = math.isqrt(proj.shape[1] - p), math.isqrt(self.num_tokens - p)
            grid = proj[None, :, p:].reshape(1, -1, src, src)
            grid = F.interpolate(grid, size=(dst, dst), mode='bilinear', align_corners=False)
            state_dict[key] = torch.cat([proj[:, :p], grid.flatten(2)[0]], dim=1)
            print_log(f'resize {key} from {src}x{src} to {dst}x{dst} patches', logger='current')

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        if k.shape[2] != self.num_tokens:
            raise ValueError(f'Linformer projects a fixed sequence of {self.num_tokens} tokens but got '
                             f'{k.shape[2]}: feed images of the img_size the model was built with, or '
                             'build it with the new img_size and load the checkpoint (E, F are resized)')
        k = self.proj_k @ k  # B, heads, proj_len, d
        v = self.proj_v @ v
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
