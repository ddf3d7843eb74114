"""Performer: FAVOR+ attention (Choromanski et al., https://arxiv.org/abs/2009.14794).

Softmax attention's kernel ``exp(q^T k / sqrt(d))`` is estimated without bias by positive
orthogonal random features ``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)`` (inputs scaled by
``d^-1/4``), after which attention is linear in the sequence length.
"""
import math
from typing import Optional

import torch

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer
from .linear_attention import kernel_attention


def orthogonal_gaussian(num_features: int, dim: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[num_features, dim] rows Gaussian-distributed in norm, orthogonal within blocks of ``dim``."""
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        blocks.append(q.T)
    norms = torch.randn(num_features, dim, generator=generator).norm(dim=1, keepdim=True)
    return torch.cat(blocks)[:num_features] * norms


def positive_random_features(x: torch.Tensor, projection: torch.Tensor, is_query: bool) -> torch.Tensor:
    """FAVOR+ features of x: [..., N, d] with projection [m, d] -> [..., N, m]."""
    wx = x @ projection.T
    # subtracting a max keeps exp finite; it cancels in the attention normalization if it is
    # constant per query, or over all keys.
    stabilizer = wx.amax(dim=-1 if is_query else (-2, -1), keepdim=True).detach()
    return torch.exp(wx - x.pow(2).sum(-1, keepdim=True) / 2 - stabilizer) / math.sqrt(projection.shape[0])


@TOKEN_MIXERS.register_module()
class PerformerAttention(MultiHeadMixer):
    """Multi-head FAVOR+ attention with fixed orthogonal random features.

    Args:
        num_features: ``m``, random features per head; default ``d log d`` (head dim ``d``).
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 num_features: Optional[int] = None,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        num_features = num_features or int(self.head_dim * math.log(self.head_dim))
        self.register_buffer('projection', orthogonal_gaussian(num_features, self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        scale = self.head_dim**-0.25
        q_feat = positive_random_features(q * scale, self.projection, is_query=True)
        k_feat = positive_random_features(k * scale, self.projection, is_query=False)
        return kernel_attention(q_feat, k_feat, v)
