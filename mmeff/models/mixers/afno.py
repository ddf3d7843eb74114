"""AFNO: adaptive Fourier neural operators (Guibas et al., https://arxiv.org/abs/2111.13587).

Token mixing as a global convolution in the frequency domain whose weights are a shared MLP:
``z = DFT(x)``, ``z~ = S_lambda(MLP(z))`` with a block-diagonal complex two-layer MLP (channel
blocks, like heads) and soft-thresholding ``S_lambda`` for sparsity, ``y = IDFT(z~) + x``.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.vit_blocks import HW, TOKEN_MIXERS, TokenMixer
from .base import split_grid


@TOKEN_MIXERS.register_module()
class AdaptiveFourierMixing(TokenMixer):
    """AFNO token mixer.

    Args:
        num_blocks: channel blocks of the block-diagonal weights (8 in the paper).
        hidden_ratio: width of the MLP's hidden layer relative to a block.
        sparsity: ``lambda`` of the soft-thresholding (0.01 in the paper).
    """

    def __init__(self,
                 embed_dim: int,
                 num_prefix_tokens: int = 0,
                 num_blocks: int = 8,
                 hidden_ratio: float = 1.0,
                 sparsity: float = 0.01):
        super().__init__()
        if embed_dim % num_blocks:
            raise ValueError(f'embed_dim={embed_dim} must be divisible by num_blocks={num_blocks}')
        self.num_prefix_tokens = num_prefix_tokens
        self.num_blocks = num_blocks
        self.sparsity = sparsity
        block, hidden = embed_dim // num_blocks, int(embed_dim // num_blocks * hidden_ratio)
        # leading 2: real and imaginary parts of the complex weights and biases
        self.w1 = nn.Parameter(0.02 * torch.randn(2, num_blocks, block, hidden))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, num_blocks, hidden))
        self.w2 = nn.Parameter(0.02 * torch.randn(2, num_blocks, hidden, block))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, num_blocks, block))

    @staticmethod
    def complex_linear(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Block-wise complex affine map: z [..., blocks, c_in] (complex) -> [..., blocks, c_out]."""
        w, b = torch.complex(weight[0], weight[1]), torch.complex(bias[0], bias[1])
        return torch.einsum('...ki,kio->...ko', z, w) + b

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        prefix, grid = split_grid(x, hw, self.num_prefix_tokens)  # B, h, w, C
        B, h, w, C = grid.shape
        z = torch.fft.rfft2(grid.float(), dim=(1, 2), norm='ortho')
        z = z.reshape(B, h, w // 2 + 1, self.num_blocks, -1)
        z = self.complex_linear(z, self.w1, self.b1)
        z = torch.complex(F.relu(z.real), F.relu(z.imag))
        z = self.complex_linear(z, self.w2, self.b2)
        z = torch.complex(F.softshrink(z.real, self.sparsity), F.softshrink(z.imag, self.sparsity))
        mixed = torch.fft.irfft2(z.reshape(B, h, w // 2 + 1, C), s=(h, w), dim=(1, 2), norm='ortho')
        return torch.cat([prefix, (grid + mixed.to(x.dtype)).flatten(1, 2)], dim=1)
