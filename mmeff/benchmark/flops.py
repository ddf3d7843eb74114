"""Counting multiply-accumulates (MACs), FLOPs and elementwise operations of one forward pass.

Conventions (docs/benchmark.md):

- ``macs``: multiply-accumulates of the matrix-like ops: convolutions, ``mm``/``addmm``/``bmm``
  (so ``nn.Linear``, ``matmul`` and ``einsum``, which PyTorch lowers to them),
  ``scaled_dot_product_attention`` (``Q K^T`` and ``A V``) on every backend, and FFTs. One
  multiply-add is one MAC, the fvcore convention of the efficient-ViT paper. Biases are not counted.
- ``flops = 2 * macs``: the RT-DETR paper's convention.
- FFT cost model: a complex FFT over ``L`` points costs ``5/2 * L * log2(L)`` real MACs
  (``5 L log2 L`` FLOPs, the radix-2 estimate FFTW reports speed in); a transform over several
  dimensions is the product of its lengths (``fft2`` of ``h x w``: ``L = h * w``); a real-input
  (``rfft``) or real-output (``irfft``) transform costs half the complex one of its real signal.
- ``elementwise_ops``: the cheap ops the efficient-ViT paper adds to its counts, one per output
  element of every pointwise floating-point op (add, mul, GELU, ...), softmax, normalization,
  pooling, resampling (interpolation, ``grid_sample``), the softmax inside fused attention (one per
  attention score), and one per input element of every reduction. Reported separately, never added into ``macs``.

Counting dispatches the real ops (``torch.utils.flop_counter.FlopCounterMode``), so what is
counted is what runs: data-dependent paths (top-K, NMS) are counted for the input given.
"""
import math
from typing import Callable, Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def fft_macs(signal_numel: int, transformed_sizes, real: bool) -> int:
    """MACs of FFTs over ``transformed_sizes`` of a tensor of ``signal_numel`` elements."""
    length = math.prod(transformed_sizes)
    macs = 2.5 * signal_numel * math.log2(length)
    return round(macs / 2 if real else macs)


# torch's formulas return FLOPs (2 per MAC) from shapes; these follow suit.
def _fft_c2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return 2 * fft_macs(math.prod(x_shape), [x_shape[d] for d in dim], real=False)


def _fft_r2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return 2 * fft_macs(math.prod(x_shape), [x_shape[d] for d in dim], real=True)


def _fft_c2r_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return 2 * fft_macs(math.prod(out_shape), [out_shape[d] for d in dim], real=True)


def _cpu_sdpa_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


# What torch's counter misses: FFTs, and SDPA's CPU kernel (it knows only the CUDA ones).
EXTRA_FLOP_FORMULAS = {
    aten._fft_c2c: _fft_c2c_flop,
    aten._fft_r2c: _fft_r2c_flop,
    aten._fft_c2r: _fft_c2r_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
}

# Per output element; pointwise ops are found by their tag, these carry none.
ELEMENTWISE_OPS = {
    aten._softmax, aten._log_softmax, aten.native_layer_norm, aten.native_batch_norm,
    aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training, aten.native_group_norm,
    aten.avg_pool2d, aten.max_pool2d_with_indices, aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d,
    aten.upsample_nearest2d, aten.upsample_bilinear2d, aten.grid_sampler_2d
}
# Fused attention: its softmax, one op per attention score (as the explicit path's softmax).
SDPA_OPS = {aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_efficient_attention,
            aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_cudnn_attention}
# Tagged pointwise, but they move data rather than compute.
NOT_COMPUTE = {aten.clone, aten._to_copy, aten.copy_}


class ElementwiseCounter(TorchDispatchMode):
    """Count the elementwise ops of what runs inside the context (torch's counter has none)."""

    def __init__(self):
        super().__init__()
        self.counts: Dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func._overloadpacket
        first_out = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(first_out, torch.Tensor) or packet in NOT_COMPUTE:
            return out
        if packet in SDPA_OPS:
            q, k = args[0], args[1]
            numel, dtype = q.numel() // q.shape[-1] * k.shape[-2], q.dtype
        elif torch.Tag.reduction in func.tags and isinstance(args[0], torch.Tensor):
            numel, dtype = args[0].numel(), args[0].dtype
        elif torch.Tag.pointwise in func.tags or packet in ELEMENTWISE_OPS:
            numel, dtype = first_out.numel(), first_out.dtype
        else:
            return out
        if dtype.is_floating_point or dtype.is_complex:
            self.counts[str(packet)] = self.counts.get(str(packet), 0) + numel
        return out


def count_ops(forward: Callable[[], object], model: Optional[torch.nn.Module] = None) -> Dict[str, object]:
    """Run ``forward()`` once without gradients and count its operations.

    Args:
        model: the module ``forward`` runs; its parameters are frozen while counting, because
            torch's module tracker fails on a view of a parameter made under ``no_grad`` (which
            still requires grad, e.g. CaiT's expanded class token).

    Returns ``macs``, ``flops`` (``2 * macs``), ``elementwise_ops`` and ``macs_by_op``.
    """
    flop_counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    elementwise = ElementwiseCounter()
    trainable = [p for p in model.parameters() if p.requires_grad] if model is not None else []
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad(), flop_counter, elementwise:
            forward()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    # torch's formulas give FLOPs as 2 x MACs (one multiply-add = 2).
    by_op = {str(op): flops // 2 for op, flops in flop_counter.get_flop_counts().get('Global', {}).items()}
    macs = sum(by_op.values())
    return dict(macs=macs, flops=2 * macs, elementwise_ops=elementwise.total, macs_by_op=by_op)
