"""Softmax self-attention, the token mixer of the ViT baseline."""
from typing import Optional

import torch
import torch.nn.functional as F

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class SoftmaxAttention(MultiHeadMixer):
    """Multi-head scaled dot-product attention (Vaswani et al., https://arxiv.org/abs/1706.03762).

    ``softmax(q k^T / sqrt(d)) v`` through ``F.scaled_dot_product_attention`` (fused kernels).
    With ``cache_qk`` (set by a block holding a token reducer) the last queries and keys are kept
    in ``qk`` for the reducer's token scores (EViT's class attention, ToMe's key similarity).
    ``keep`` ([B, N], 0/1 with straight-through gradients) masks the keys of tokens a DynamicViT
    predictor dropped during training: ``A_ij = exp(P_ij) G_ij / sum_k exp(P_ik) G_ik`` with
    ``G_ij = 1`` if ``i = j`` else ``keep_j`` (Rao et al., https://arxiv.org/abs/2106.02034).
    """

    cache_qk = False

    def attend(self,
               q: torch.Tensor,
               k: torch.Tensor,
               v: torch.Tensor,
               hw: HW,
               keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.cache_qk:
            self.qk = (q, k)
        if keep is not None:
            return self.masked_attend(q, k, v, keep)
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)

    def masked_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Explicit attention over kept keys; a multiplicative mask keeps ``keep``'s gradient."""
        logits = q @ k.transpose(-1, -2) * self.scale  # B, heads, N, N
        weights = (logits - logits.amax(-1, keepdim=True).detach()).exp()
        eye = torch.eye(keep.shape[1], dtype=keep.dtype, device=keep.device)
        gate = keep[:, None, None, :] * (1 - eye) + eye  # B, 1, N, N
        attn = weights * gate / (weights * gate).sum(-1, keepdim=True)
        return F.dropout(attn, self.attn_drop, self.training) @ v
