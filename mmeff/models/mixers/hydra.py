"""Hydra attention (Bolya et al., https://arxiv.org/abs/2209.07484).

With as many heads as channels and the cosine-similarity kernel ``phi(x) = x / |x|``, linear
attention collapses to ``phi(Q) * sum_t (phi(K)_t * V_t)``: a global feature vector gated by each
query, O(N C).
"""
import torch
import torch.nn.functional as F

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class HydraAttention(MultiHeadMixer):
    """Hydra attention: one head per channel, cosine kernel."""

    def __init__(self, embed_dim: int, qkv_bias: bool = True, proj_drop: float = 0.0):
        # a single head of width C: q and k are L2-normalized over all channels, then each channel
        # acts as its own head.
        super().__init__(embed_dim, 1, qkv_bias, proj_drop=proj_drop)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return q * (k * v).sum(dim=-2, keepdim=True)  # B, 1, N, C
