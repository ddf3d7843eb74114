"""FNet: mixing tokens with Fourier transforms (Lee-Thorp et al., https://arxiv.org/abs/2105.03824).

The attention sublayer is replaced by a parameter-free 2-D discrete Fourier transform over the
sequence and hidden dimensions, keeping the real part: ``y = Re(FFT_seq(FFT_hidden(x)))``.
"""
import torch

from ..layers.vit_blocks import HW, TOKEN_MIXERS, TokenMixer


@TOKEN_MIXERS.register_module()
class FourierMixing(TokenMixer):
    """FNet's token mixing, ``Re(DFT_2D(x))``; no parameters."""

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        # the FFT of half precision is restricted to powers of two; compute in float32.
        return torch.fft.fft2(x.float(), dim=(-2, -1)).real.to(x.dtype)
