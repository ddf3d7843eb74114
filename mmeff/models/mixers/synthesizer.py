"""Synthesizer: attention weights without token-token interactions (Tay et al.,
https://arxiv.org/abs/2005.00743).

The attention map is synthesized instead of computed from query-key dot products:
``Y = softmax(B) G(X)`` with values ``G(X)``. *Factorized dense*: each token i predicts
``a`` and ``b`` numbers (``a b >= N``) whose outer product, flattened, is its row of logits
``B_i``. *Factorized random*: ``B = R_1 R_2^T`` with learned ``R_1, R_2`` of shape ``N x k``,
independent of the input.
"""
import math

import torch
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS, TokenMixer


class SynthesizedAttention(TokenMixer):
    """Shared frame: ``proj(softmax(logits(x)) @ values(x))`` over heads of a fixed-length sequence."""

    def __init__(self, embed_dim: int, num_heads: int, num_tokens: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.num_tokens = num_tokens
        self.values = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> attention logits broadcastable to [B, heads, N, N]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        B, N, C = x.shape
        if N != self.num_tokens:
            raise ValueError(f'{type(self).__name__} synthesizes attention over {self.num_tokens} tokens '
                             f'but got {N}: feed images of the img_size the model was built with')
        v = self.values(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)  # B, heads, N, d
        out = self.attn_drop(self.logits(x).softmax(-1)) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))


@TOKEN_MIXERS.register_module()
class FactorizedDenseSynthesizer(SynthesizedAttention):
    """Synthesizer (factorized dense): per-token logits ``tile(F_A(x_i)) * repeat(F_B(x_i))``."""

    def __init__(self, embed_dim: int, num_heads: int, num_tokens: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, num_tokens, qkv_bias, attn_drop, proj_drop)
        # a * b >= N; the 197 tokens of ViT (a prime) can't be factorized exactly, the excess is cut.
        self.a = math.isqrt(num_tokens - 1) + 1
        self.b = math.ceil(num_tokens / self.a)
        self.to_a = nn.Linear(embed_dim, num_heads * self.a)
        self.to_b = nn.Linear(embed_dim, num_heads * self.b)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        a = self.to_a(x).reshape(B, N, self.num_heads, self.a, 1)
        b = self.to_b(x).reshape(B, N, self.num_heads, 1, self.b)
        return (a * b).flatten(-2)[..., :N].transpose(1, 2)  # B, heads, N, N


@TOKEN_MIXERS.register_module()
class FactorizedRandomSynthesizer(SynthesizedAttention):
    """Synthesizer (factorized random): learned input-independent logits ``R_1 R_2^T`` of rank ``rank``."""

    def __init__(self, embed_dim: int, num_heads: int, num_tokens: int, rank: int = 8,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, num_tokens, qkv_bias, attn_drop, proj_drop)
        self.r1 = nn.Parameter(torch.randn(num_heads, num_tokens, rank) * rank**-0.5)
        self.r2 = nn.Parameter(torch.randn(num_heads, num_tokens, rank) * rank**-0.5)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return (self.r1 @ self.r2.transpose(-1, -2))[None]  # 1, heads, N, N
