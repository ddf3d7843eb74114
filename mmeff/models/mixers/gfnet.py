"""GFNet: global filter networks (Rao et al., https://arxiv.org/abs/2107.00645).

Tokens on the patch grid are mixed by a learnable global filter in the frequency domain:
``X = FFT_2D(x)``, ``X~ = K * X`` (elementwise, one complex filter per channel),
``x = IFFT_2D(X~)``, i.e. a global depthwise circular convolution in O(N log N).
"""
from typing import Tuple

import torch
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS, TokenMixer
from .base import check_grid, split_grid


@TOKEN_MIXERS.register_module()
class GlobalFilter(TokenMixer):
    """GFNet's global filter layer for a fixed patch grid ``grid_size`` (given by the skeleton).

    Prefix tokens (a class token) have no grid position and pass through unchanged; GFNet itself
    uses no class token (``with_cls_token=False, out_type='avg'`` in the configs).
    """

    def __init__(self, embed_dim: int, grid_size: Tuple[int, int], num_prefix_tokens: int = 0):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        h, w = self.grid_size
        # real and imaginary parts of the filter on the rfft2 half-spectrum: h, w // 2 + 1, C
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, embed_dim, 2) * 0.02)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        check_grid(hw, self.grid_size, 'GlobalFilter')
        prefix, grid = split_grid(x, hw, self.num_prefix_tokens)  # B, h, w, C
        spectrum = torch.fft.rfft2(grid.float(), dim=(1, 2), norm='ortho')
        spectrum = spectrum * torch.view_as_complex(self.complex_weight)
        grid = torch.fft.irfft2(spectrum, s=hw, dim=(1, 2), norm='ortho').to(x.dtype)
        return torch.cat([prefix, grid.flatten(1, 2)], dim=1)
