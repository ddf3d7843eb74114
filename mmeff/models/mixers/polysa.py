"""Poly-SA: self-attention as a third-order polynomial, after Poly-NL (Babiloni et al., ICCV 2021,
*Poly-NL: Linear Complexity Non-local Layers with 3rd Order Polynomials*,
https://arxiv.org/abs/2107.02859).

Poly-NL observes that a non-local (self-attention) layer is a special third-order polynomial of its
input and keeps that order while dropping the N x N similarity matrix: pairwise products become
element-wise products and the sum over all pairs a pooling over positions, O(N C) instead of
O(N^2 C). *Which Transformer to Favor* (https://arxiv.org/abs/2308.09372) uses it as ViT's token
mixer ("Poly-SA") with attention's per-head ``q, k, v``: the pooling over positions is a learned
weighting ``p2`` of the tokens (collapse), spread back with learned weights ``p1`` (expand),
and a LayerNorm keeps the product of three projections in scale:

    y_n = q_n * p1_n * LayerNorm(sum_m p2_m * k_m * v_m)    (per head; * is element-wise)

With ``p1 = 1``, ``p2 = 1/N`` and no norm this is Poly-NL's average pooling; in general it is the
polynomial ``q * (A (k * v))`` with the rank-one token-mixing matrix ``A = p1 p2^T``.
"""
import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer, check_grid, resize_token_param


@TOKEN_MIXERS.register_module()
class PolySelfAttention(MultiHeadMixer):
    """Poly-SA token mixer for a fixed patch grid (its token weights are per position).

    Args:
        grid_size: the patch grid the token weights are learned for (given by the skeleton);
            checkpoints of another resolution are resized on loading, as position embeddings.
        num_prefix_tokens: leading non-patch tokens (class token); they have their own weights.
        norm_eps: epsilon of the LayerNorm on the pooled vector.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 grid_size: tuple,
                 num_prefix_tokens: int = 1,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        num_tokens = num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.p1 = nn.Parameter(trunc_normal_(torch.empty(num_heads, num_tokens), std=0.02))  # expand
        self.p2 = nn.Parameter(trunc_normal_(torch.empty(num_heads, num_tokens), std=0.02))  # collapse
        self.norm = nn.LayerNorm(self.head_dim, eps=norm_eps)  # shared by the heads
        self._register_load_state_dict_pre_hook(self._resize_loaded_token_weights)

    def _resize_loaded_token_weights(self, state_dict, prefix, *args, **kwargs):
        for name in ('p1', 'p2'):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                weights = state_dict[key].T[None]  # 1, N_src, heads
                state_dict[key] = resize_token_param(weights, self.grid_size, self.num_prefix_tokens, key)[0].T

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        check_grid(hw, self.grid_size, 'PolySelfAttention')
        pooled = torch.einsum('hn,bhnd->bhd', self.p2, k * v)  # B, heads, d
        pooled = F.dropout(self.norm(pooled), self.attn_drop, self.training)
        return q * (self.p1[None, :, :, None] * pooled[:, :, None, :])  # B, heads, N, d
