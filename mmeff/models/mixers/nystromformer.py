"""Nyströmformer (Xiong et al., https://arxiv.org/abs/2102.03902).

Softmax attention ``S = softmax(Q K^T / sqrt(d))`` is approximated with ``m`` landmarks
``Q~, K~`` (segment means of the queries and keys) by the Nyström method:
``S V ~ softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T) V``, with the Moore-Penrose
pseudo-inverse computed by the paper's iterative scheme. A depthwise convolution of the values
along the sequence is added as a skip connection, as in the paper's released models.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer


def iterative_pinv(a: torch.Tensor, num_iters: int) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of a batch of square matrices ``a`` ([..., m, m]).

    The iteration of Razavi et al. (2014) used by the paper; it only needs matrix products.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    # Z0 = A^T / (||A||_1 ||A||_inf) guarantees convergence.
    norm = a.abs().sum(-2).amax(-1) * a.abs().sum(-1).amax(-1)
    z = a.transpose(-1, -2) / norm[..., None, None]
    for _ in range(num_iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@TOKEN_MIXERS.register_module()
class NystromAttention(MultiHeadMixer):
    """Nyström approximation of softmax attention with ``num_landmarks`` landmarks.

    Args:
        num_landmarks: ``m``, the number of landmarks (32 or 64 in *Which Transformer to Favor*).
        pinv_iters: iterations of the pseudo-inverse (6 in the paper).
        conv_kernel_size: kernel of the depthwise value convolution; ``None`` disables it.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 num_landmarks: int = 32,
                 pinv_iters: int = 6,
                 conv_kernel_size: Optional[int] = 33,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.num_landmarks = num_landmarks
        self.pinv_iters = pinv_iters
        self.value_conv = None
        if conv_kernel_size:
            self.value_conv = nn.Conv2d(
                num_heads, num_heads, (conv_kernel_size, 1),
                padding=(conv_kernel_size // 2, 0), groups=num_heads, bias=False)

    def landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """Segment means over the sequence: [B, heads, N, d] -> [B, heads, m, d]."""
        B, H, N, d = x.shape
        # adaptive pooling gives near-equal segments when N is not a multiple of m (197 tokens).
        return F.adaptive_avg_pool1d(x.reshape(B * H, N, d).transpose(1, 2), self.num_landmarks) \
            .transpose(1, 2).reshape(B, H, self.num_landmarks, d)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        q = q * self.scale
        q_land, k_land = self.landmarks(q), self.landmarks(k)
        kernel_1 = (q @ k_land.transpose(-1, -2)).softmax(-1)  # B, heads, N, m
        kernel_2 = (q_land @ k_land.transpose(-1, -2)).softmax(-1)  # B, heads, m, m
        kernel_3 = (q_land @ k.transpose(-1, -2)).softmax(-1)  # B, heads, m, N
        out = kernel_1 @ (iterative_pinv(kernel_2, self.pinv_iters) @ (kernel_3 @ v))
        if self.value_conv is not None:
            out = out + self.value_conv(v)
        return out
