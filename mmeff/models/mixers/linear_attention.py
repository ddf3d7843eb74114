"""Transformers are RNNs: linear attention (Katharopoulos et al., https://arxiv.org/abs/2006.16236).

The softmax similarity is replaced by a kernel ``phi(q)^T phi(k)`` with ``phi = elu + 1``; by
associativity ``V_i' = phi(Q_i)^T (sum_j phi(K_j) V_j^T) / (phi(Q_i)^T sum_j phi(K_j))`` costs
O(N d^2) instead of O(N^2 d).
"""
import torch
import torch.nn.functional as F

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


def kernel_attention(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor,
                     eps: float = 1e-6) -> torch.Tensor:
    """Normalized linear attention from non-negative features, in O(N).

    q_feat, k_feat: [B, heads, N, r]; v: [B, heads, N, d] -> [B, heads, N, d].
    """
    kv = k_feat.transpose(-1, -2) @ v  # B, heads, r, d
    normalizer = q_feat @ k_feat.sum(dim=-2, keepdim=True).transpose(-1, -2)  # B, heads, N, 1
    return (q_feat @ kv) / (normalizer + eps)


@TOKEN_MIXERS.register_module()
class LinearAttention(MultiHeadMixer):
    """Multi-head linear attention with the feature map ``elu(x) + 1``."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        return kernel_attention(F.elu(q) + 1, F.elu(k) + 1, v)
