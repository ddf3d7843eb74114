"""Sparse Sinkhorn attention (Tay et al., https://arxiv.org/abs/2002.11296).

The sequence is cut into blocks. A sorting network scores, from each block's summary (mean key),
which block it should attend to; Sinkhorn balancing (alternating row and column normalization
in log space, Gumbel noise in training) turns the scores into a soft permutation of the blocks.
Each query block then attends to the keys of its own block and of its sorted block: memory
O(N b) for blocks of size b instead of O(N^2).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


def sinkhorn(log_alpha: torch.Tensor, num_iters: int) -> torch.Tensor:
    """Log of a doubly stochastic matrix from scores [..., n, n] by Sinkhorn balancing."""
    for _ in range(num_iters):
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-1, keepdim=True)
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-2, keepdim=True)
    return log_alpha


def largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


@TOKEN_MIXERS.register_module()
class SinkhornAttention(MultiHeadMixer):
    """Multi-head sparse Sinkhorn attention over blocks of at most ``max_block_size`` tokens.

    Args:
        num_tokens: the sequence length (given by the skeleton): the block size is its largest
            divisor not above ``max_block_size`` (196 patches: 28 for 32, 49 for 64).
        max_block_size: ``b_max`` of the authors' configs (32 or 64).
        sinkhorn_iters: balancing iterations.
        temperature: of the Gumbel-Sinkhorn relaxation.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 num_tokens: int,
                 max_block_size: int = 32,
                 sinkhorn_iters: int = 8,
                 temperature: float = 0.75,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.num_tokens = num_tokens
        self.block_size = largest_divisor(num_tokens, max_block_size)
        self.num_blocks = num_tokens // self.block_size
        self.sinkhorn_iters = sinkhorn_iters
        self.temperature = temperature
        self.sort_net = nn.Linear(self.head_dim, self.num_blocks)

    def sort_matrix(self, k_blocks: torch.Tensor) -> torch.Tensor:
        """Soft block permutation [B, heads, nb, nb] from the block summaries of the keys."""
        logits = self.sort_net(k_blocks.mean(dim=3))  # B, heads, nb, nb
        if self.training:
            uniform = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
            logits = logits - torch.log(-torch.log(uniform))
        return sinkhorn(logits / self.temperature, self.sinkhorn_iters).exp()

    def attend_sorted(self, q_blocks: torch.Tensor, k_blocks: torch.Tensor, v_blocks: torch.Tensor,
                      perm: torch.Tensor) -> torch.Tensor:
        """Each query block attends to its own and its sorted block: [B, heads, nb, b, d]."""
        k_sorted = torch.einsum('bhij,bhjnd->bhind', perm, k_blocks)
        v_sorted = torch.einsum('bhij,bhjnd->bhind', perm, v_blocks)
        keys = torch.cat([k_blocks, k_sorted], dim=3)  # B, heads, nb, 2b, d
        values = torch.cat([v_blocks, v_sorted], dim=3)
        return F.scaled_dot_product_attention(
            q_blocks, keys, values, dropout_p=self.attn_drop if self.training else 0.0)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        B, H, N, d = q.shape
        if N != self.num_tokens:
            raise ValueError(f'SinkhornAttention sorts {self.num_blocks} blocks of a {self.num_tokens}-token '
                             f'sequence but got {N} tokens: feed images of the img_size the model was built with')
        q_blocks, k_blocks, v_blocks = (t.reshape(B, H, self.num_blocks, self.block_size, d) for t in (q, k, v))
        out = self.attend_sorted(q_blocks, k_blocks, v_blocks, self.sort_matrix(k_blocks))
        return out.reshape(B, H, N, d)
