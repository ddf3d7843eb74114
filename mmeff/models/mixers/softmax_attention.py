"""Softmax self-attention, the token mixer of the ViT baseline."""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..layers.vit_blocks import HW, TOKEN_MIXERS, QueryKey
from .base import MultiHeadMixer


@TOKEN_MIXERS.register_module()
class SoftmaxAttention(MultiHeadMixer):
    """Multi-head scaled dot-product attention (Vaswani et al., https://arxiv.org/abs/1706.03762).

    ``softmax(q k^T / sqrt(d)) v`` through ``F.scaled_dot_product_attention`` (fused kernels).
    It offers what the token reducers ask of a mixer (``TokenMixer``): its queries and keys
    (``return_query_key=True``), from which EViT takes the class attention and ToMe the key
    similarity, and a ``keep_mask`` ([B, N], 0/1 with straight-through gradients) that masks the
    keys of tokens a DynamicViT predictor dropped in training or A-ViT halted:
    ``A_ij = exp(P_ij) G_ij / sum_k exp(P_ik) G_ik`` with ``G_ij = 1`` if ``i = j`` else ``keep_j``
    (Rao et al., https://arxiv.org/abs/2106.02034).
    """

    provides_query_key = True
    supports_keep_mask = True

    def forward(self,
                x: torch.Tensor,
                hw: HW,
                keep_mask: Optional[torch.Tensor] = None,
                return_query_key: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, QueryKey]]:
        q, k, v = self.split_qkv(x)
        out = self.attend(q, k, v, hw) if keep_mask is None else self.attend_kept(q, k, v, keep_mask)
        out = self.merge_heads(out)
        return (out, QueryKey(q, k, self.scale)) if return_query_key else out

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)

    def attend_kept(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        """Explicit attention over the kept keys; a multiplicative mask keeps ``keep_mask``'s gradient."""
        logits = q @ k.transpose(-1, -2) * self.scale  # B, heads, N, N
        weights = (logits - logits.amax(-1, keepdim=True).detach()).exp()
        eye = torch.eye(keep_mask.shape[1], dtype=keep_mask.dtype, device=keep_mask.device)
        gate = keep_mask[:, None, None, :] * (1 - eye) + eye  # B, 1, N, N
        attn = weights * gate / (weights * gate).sum(-1, keepdim=True)
        return F.dropout(attn, self.attn_drop, self.training) @ v
