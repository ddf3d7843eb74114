"""SLAB's simplified linear attention (Guo et al., ICML 2024, *SLAB: Efficient Transformers with
Simplified Linear Attention and Progressive Re-parameterized Batch Normalization*,
https://arxiv.org/abs/2405.11582).

Linear attention with the plain ReLU kernel, plus a depth-wise convolution on the values that gives
back the local detail a low-rank linear attention map loses:

    SLA(Q, K, V) = ReLU(Q) (ReLU(K)^T V) / (ReLU(Q) sum_j ReLU(K_j)^T) + DWC(V)

in O(N d^2) per head. As in the authors' code, a learned position encoding is added to the keys
before the kernel, and one 5x5 depth-wise convolution (over a head's channels) is shared by the
heads. The paper's other half, progressive re-parameterized BatchNorm, is the norm ``PRepBN``
(``mmeff/models/layers/prepbn.py``), chosen in the skeleton by ``norm_cfg``.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS
from .base import MultiHeadMixer, check_grid, resize_token_param
from .linear_attention import kernel_attention


@TOKEN_MIXERS.register_module()
class SimplifiedLinearAttention(MultiHeadMixer):
    """SLAB's token mixer for a fixed patch grid (its key position encoding is per position).

    Args:
        grid_size: the patch grid (given by the skeleton); checkpoints of another resolution have
            their position encoding resized on loading.
        num_prefix_tokens: leading non-patch tokens (class token): they get no convolution term.
            SLAB itself has none (``with_cls_token=False, out_type='avg'`` in the configs).
        dwc_kernel_size: kernel of the depth-wise convolution on the values.
    """

    def __init__(self,
                 embed_dim: int,
                 num_heads: int,
                 grid_size: tuple,
                 num_prefix_tokens: int = 0,
                 dwc_kernel_size: int = 5,
                 qkv_bias: bool = True,
                 proj_drop: float = 0.0):
        super().__init__(embed_dim, num_heads, qkv_bias, proj_drop=proj_drop)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        num_tokens = num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.positional_encoding = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))  # added to K
        self.dwc = nn.Conv2d(
            self.head_dim, self.head_dim, dwc_kernel_size, padding=dwc_kernel_size // 2, groups=self.head_dim)
        self._register_load_state_dict_pre_hook(self._resize_loaded_position_encoding)

    def _resize_loaded_position_encoding(self, state_dict, prefix, *args, **kwargs):
        key = prefix + 'positional_encoding'
        if key in state_dict and state_dict[key].shape != self.positional_encoding.shape:
            state_dict[key] = resize_token_param(state_dict[key], self.grid_size, self.num_prefix_tokens, key)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        check_grid(hw, self.grid_size, 'SimplifiedLinearAttention')
        return super().forward(x, hw)

    def split_qkv(self, x: torch.Tensor):
        B, N, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # B, N, C each
        k = k + self.positional_encoding
        return tuple(t.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: HW) -> torch.Tensor:
        # the normalizer sums over all keys: keep it in float32 under mixed precision
        out = kernel_attention(F.relu(q).float(), F.relu(k).float(), v.float()).to(v.dtype)  # B, heads, N, d
        B, heads, N, d = v.shape
        p = self.num_prefix_tokens
        grid = v[:, :, p:].reshape(B * heads, *hw, d).permute(0, 3, 1, 2)  # B*heads, d, h, w
        local = self.dwc(grid).flatten(2).transpose(1, 2).reshape(B, heads, N - p, d)
        return torch.cat([out[:, :, :p], out[:, :, p:] + local], dim=2)
