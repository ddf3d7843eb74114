"""Reformer's LSH attention (Kitaev et al., https://arxiv.org/abs/2001.04451).

Queries and keys are shared (keys are the unit-normalized queries) so that similar vectors hash
together: ``h(x) = argmax([x R; -x R])`` for a random rotation ``R``. Tokens are sorted by bucket,
cut into chunks, and each chunk attends to itself and the previous chunk; a token attends to
itself only if nothing else is available. ``num_hashes`` rounds are combined with weights
proportional to their softmax normalizers.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer

SELF_LOGIT = -1e5  # the paper's value: self-attention only when no other key is in reach
PAD_LOGIT = -1e9


@TOKEN_MIXERS.register_module()
class LSHAttention(MultiHeadMixer):
    """Multi-head LSH attention with shared query-key projection.

    Args:
        bucket_size: tokens per chunk (64, as in the Reformer defaults the authors used).
        num_hashes: hashing rounds.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 bucket_size: int = 64,
                 num_hashes: int = 4,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.qkv = nn.Linear(embed_dim, embed_dim * 2, bias=qkv_bias)  # shared QK, V
        self.bucket_size = bucket_size
        self.num_hashes = num_hashes

    def split_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        qk, v = self.qkv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qk, qk / qk.norm(dim=-1, keepdim=True).clamp_min(1e-6), v

    def hash(self, k: torch.Tensor, num_buckets: int) -> torch.Tensor:
        """Angular LSH: [B, H, N, d] -> bucket ids [B, H, rounds, N]."""
        rotations = torch.randn(k.shape[-1], self.num_hashes, num_buckets // 2, device=k.device, dtype=k.dtype)
        rotated = torch.einsum('bhnd,drk->bhrnk', k, rotations)
        return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        B, H, N, d = q.shape
        chunk = min(self.bucket_size, N)
        num_chunks = math.ceil(N / chunk)
        buckets = self.hash(k, max(2, 2 * math.ceil(num_chunks / 2)))  # B, H, R, N
        positions = torch.arange(N, device=q.device)
        order = (buckets * N + positions).argsort(dim=-1)  # sort by bucket, then position

        def chunked(t: torch.Tensor) -> torch.Tensor:
            """Gather in hash order and pad: [B, H, N, c] -> [B, H, R, chunks, chunk, c]."""
            t = t[:, :, None].expand(-1, -1, self.num_hashes, -1, -1)
            t = t.gather(3, order[..., None].expand(-1, -1, -1, -1, t.shape[-1]))
            t = F.pad(t, (0, 0, 0, num_chunks * chunk - N))
            return t.reshape(B, H, self.num_hashes, num_chunks, chunk, t.shape[-1])

        pos = chunked(positions.expand(B, H, N)[..., None].float())[..., 0]  # padding -> position 0
        valid = chunked(torch.ones(B, H, N, 1, device=q.device))[..., 0]
        sq, sk, sv = chunked(q), chunked(k), chunked(v)
        if num_chunks > 1:  # look one chunk back (circularly)
            sk, sv, kpos, kvalid = (torch.cat([t, t.roll(1, dims=3)], dim=4) for t in (sk, sv, pos, valid))
        else:
            kpos, kvalid = pos, valid
        logits = sq @ sk.transpose(-1, -2) * self.scale  # B, H, R, chunks, chunk, keys
        logits = logits.masked_fill(pos[..., :, None] == kpos[..., None, :], SELF_LOGIT)
        logits = logits.masked_fill(kvalid[..., None, :] == 0, PAD_LOGIT)
        lse = logits.logsumexp(dim=-1, keepdim=True)
        out = (logits - lse).exp() @ sv  # B, H, R, chunks, chunk, d

        # undo the sort: back to token order, then weight the rounds by their normalizers
        out = out.flatten(3, 4)[..., :N, :]
        lse = lse.flatten(3, 4)[..., :N, :]
        undo = order.argsort(dim=-1)[..., None]
        out = out.gather(3, undo.expand(-1, -1, -1, -1, d))
        lse = lse.gather(3, undo)
        return (out * lse.softmax(dim=2)).sum(dim=2)
