"""Routing attention (Roy et al., Routing Transformer, https://arxiv.org/abs/2003.05997).

Queries and keys are routed to ``num_clusters`` clusters by online k-means on the unit sphere:
centroids shared by queries and keys, updated as exponential moving averages of the vectors
assigned to them. With balanced clusters, each centroid takes its ``w = N / num_clusters`` nearest
queries and keys, and the queries attend only to the keys of their cluster: O(N^1.5 d) for
``sqrt(N)`` clusters. A token picked by several centroids averages its outputs; one picked by
none outputs zero (the block's residual carries it).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class RoutingAttention(MultiHeadMixer):
    """Multi-head routing attention.

    Args:
        num_clusters: k-means clusters per head; default ``round(sqrt(num_tokens))``.
        decay: EMA decay of the centroids (0.999 in the paper).
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 num_tokens: int,
                 num_clusters: Optional[int] = None,
                 decay: float = 0.999,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.num_clusters = num_clusters or round(math.sqrt(num_tokens))
        self.decay = decay
        self.register_buffer('centroids', F.normalize(torch.randn(num_heads, self.num_clusters, self.head_dim), dim=-1))

    def route(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """Indices [B, heads, clusters, window] of the ``window`` vectors nearest to each centroid."""
        similarity = torch.einsum('bhnd,hcd->bhcn', F.normalize(x, dim=-1), self.centroids)
        return similarity.topk(window, dim=-1).indices

    @torch.no_grad()
    def update_centroids(self, q: torch.Tensor, k: torch.Tensor) -> None:
        """One online k-means step: move each centroid towards the mean of its nearest q and k."""
        vectors = F.normalize(torch.cat([q, k], dim=2), dim=-1)  # B, heads, 2N, d
        nearest = torch.einsum('bhnd,hcd->bhnc', vectors, self.centroids).argmax(-1)
        assign = F.one_hot(nearest, self.num_clusters).to(vectors.dtype)  # B, heads, 2N, c
        sums = torch.einsum('bhnc,bhnd->hcd', assign, vectors)
        counts = assign.sum(dim=(0, 2))[..., None]  # heads, c, 1
        means = torch.where(counts > 0, sums / counts.clamp_min(1), self.centroids)
        self.centroids.mul_(self.decay).add_((1 - self.decay) * means)
        self.centroids.copy_(F.normalize(self.centroids, dim=-1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        B, H, N, d = q.shape
        window = math.ceil(N / self.num_clusters)
        q_idx, k_idx = self.route(q, window), self.route(k, window)  # B, H, c, w

        def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return t.gather(2, idx.flatten(2)[..., None].expand(-1, -1, -1, d)).reshape(*idx.shape, d)

        out = F.scaled_dot_product_attention(
            gather(q, q_idx), gather(k, k_idx), gather(v, k_idx),
            dropout_p=self.attn_drop if self.training else 0.0)  # B, H, c, w, d
        flat_idx = q_idx.flatten(2)[..., None]
        total = q.new_zeros(B, H, N, d).scatter_add(2, flat_idx.expand(-1, -1, -1, d), out.flatten(2, 3))
        count = q.new_zeros(B, H, N, 1).scatter_add(2, flat_idx, q.new_ones(flat_idx.shape))
        if self.training:
            self.update_centroids(q, k)
        return total / count.clamp_min(1)
