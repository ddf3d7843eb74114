"""Talking-heads attention (Shazeer et al., https://arxiv.org/abs/2003.02436), as used by CaiT.

The attention logits and the attention weights are each mixed across heads by a learned
``heads x heads`` linear map, before and after the softmax.
"""
import torch
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class TalkingHeadsAttention(MultiHeadMixer):
    """Softmax attention with learned head mixing of logits (``proj_l``) and weights (``proj_w``)."""

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.proj_l = nn.Linear(num_heads, num_heads)
        self.proj_w = nn.Linear(num_heads, num_heads)
        self.attn_drop = nn.Dropout(attn_drop)

    def mix_heads(self, attn: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        return proj(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # over the heads of B, heads, N, N

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        attn = self.mix_heads(q @ k.transpose(-1, -2) * self.scale, self.proj_l).softmax(-1)
        return self.attn_drop(self.mix_heads(attn, self.proj_w)) @ v
