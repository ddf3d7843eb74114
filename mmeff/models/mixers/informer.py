"""Informer's ProbSparse self-attention (Zhou et al., https://arxiv.org/abs/2012.07436).

Most queries produce a near-uniform attention map. Each query's sparsity is measured by
``M(q_i, K) = max_j(q_i k_j^T / sqrt(d)) - mean_j(q_i k_j^T / sqrt(d))``, estimated on
``U = factor * ln(N)`` randomly sampled keys; only the ``u = factor * ln(N)`` queries with the
largest ``M`` attend, the others ("lazy" queries) output the mean of the values. O(N log N).
"""
import math

import torch
import torch.nn.functional as F

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class ProbSparseAttention(MultiHeadMixer):
    """Multi-head ProbSparse attention.

    Args:
        factor: ``c`` of the paper, scaling the number of active queries and sampled keys (5).
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 factor: int = 5,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.factor = factor

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        B, H, N, d = q.shape
        budget = min(N, self.factor * math.ceil(math.log(N)))
        sampled = torch.randint(N, (budget, ), device=k.device) if budget < N else torch.arange(N, device=k.device)
        scores = q @ k[:, :, sampled].transpose(-1, -2) * self.scale  # B, H, N, U
        sparsity = scores.amax(-1) - scores.mean(-1)  # B, H, N
        top = sparsity.topk(budget, dim=-1).indices  # B, H, u
        active_q = q.gather(2, top[..., None].expand(-1, -1, -1, d))
        active_out = F.scaled_dot_product_attention(
            active_q, k, v, dropout_p=self.attn_drop if self.training else 0.0)  # B, H, u, d
        out = v.mean(dim=2, keepdim=True).expand(B, H, N, d).clone()
        return out.scatter(2, top[..., None].expand(-1, -1, -1, d), active_out)
