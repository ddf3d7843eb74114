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


# --- The efficient-ViT paper's FLOP count (``--flops-convention wttf``) -----------------------------
# Nauen et al. count GFLOPs with fvcore's FlopCountAnalysis (a jit trace: one multiply-add = 1, plus
# fvcore's own norm, pooling and resampling handles) and weight further ops per element
# (tobna/WhatTransformerToFavor, metrics.py); ops without a handle count 0.
WTTF_PER_OUTPUT_ELEMENT = {
    'aten::add': 1, 'aten::add_': 1, 'aten::sub': 1, 'aten::rsub': 1, 'aten::mul': 1, 'aten::mul_': 1,
    'aten::div': 1, 'aten::div_': 1, 'aten::reciprocal': 1, 'aten::scatter_add': 1, 'aten::sin': 1, 'aten::cos': 1,
    'aten::pow': 3, 'aten::softmax': 5, 'aten::log_softmax': 5, 'aten::gelu': 8, 'aten::log': 20, 'aten::exp': 20,
    'aten::sigmoid': 22,
}
WTTF_PER_INPUT_ELEMENT = {'aten::mean': 1, 'aten::avg_pool2d': 1, 'aten::adaptive_avg_pool1d': 1}
WTTF_FREE = ('aten::bernoulli_', 'aten::expand_as', 'aten::clamp_min', 'aten::view_as_complex', 'aten::real',
             'aten::eye', 'aten::repeat_interleave', 'aten::scatter_reduce', 'aten::fill_', 'aten::ones_like',
             'aten::topk')


def _jit_shape(value) -> Optional[list]:
    return value.type().sizes() if value.isCompleteTensor() else None


def _per_element(weight: float, of_output: bool):
    def handle(inputs, outputs):
        return weight * math.prod(_jit_shape(outputs[0] if of_output else inputs[0]))
    return handle


def _reduction(per_reduced_element: int):
    """``sum`` (1) and ``norm`` (2: a square and an add) over the reduced elements, one fewer add per output."""
    def handle(inputs, outputs):
        numel_in, numel_out = math.prod(_jit_shape(inputs[0])), math.prod(_jit_shape(outputs[0]))
        return per_reduced_element * numel_in - numel_out
    return handle


def _cumsum(inputs, outputs):
    shape = _jit_shape(inputs[0])  # the authors assume the longest dimension is the summed one
    return math.prod(shape) * (max(shape) - 1) // 2


def _fft2(per_point: float, size_of_output: bool):
    """``per_point * numel * log2(N)``, N the points of the 2-D transform: the two dimensions from the
    first one whose size the transform changes (rfft2, irfft2), else the last two."""
    def handle(inputs, outputs):
        shape_in, shape_out = _jit_shape(inputs[0]), _jit_shape(outputs[0])
        first = next((i for i, (a, b) in enumerate(zip(shape_in, shape_out)) if a != b), len(shape_in) - 1)
        shape = shape_out if size_of_output else shape_in
        return int(math.prod(shape) * per_point * math.log2(shape[first] * shape[first - 1]))
    return handle


def _matmul(inputs, outputs):
    """Output elements x the contracted length. fvcore's handle takes the first operand's batch
    dimensions only, which misses the broadcast in ``E @ K`` (Linformer's ``[k, N] @ [B, h, N, d]``);
    the authors' models contract that with einsum, which fvcore counts in full."""
    return math.prod(_jit_shape(outputs[0])) * _jit_shape(inputs[0])[-1]


def _sdpa(inputs, outputs):
    """Fused attention counted as the explicit ``softmax(q k^T * scale) v`` the authors' models run:
    the two products, one multiply per score for the scale and the softmax's 5."""
    q, k, v = (_jit_shape(x) for x in inputs[:3])
    scores = math.prod(q[:-1]) * k[-2]
    return scores * (q[-1] + v[-1]) + scores * (1 + 5)


def wttf_op_handles() -> Dict[str, Optional[Callable]]:
    """fvcore op handles for the paper's convention (fvcore's defaults stay for the ops not listed)."""
    handles = {op: _per_element(w, of_output=True) for op, w in WTTF_PER_OUTPUT_ELEMENT.items()}
    handles.update({op: _per_element(w, of_output=False) for op, w in WTTF_PER_INPUT_ELEMENT.items()})
    handles.update({op: None for op in WTTF_FREE})
    handles.update({
        'aten::sum': _reduction(1), 'aten::norm': _reduction(2), 'aten::linalg_vector_norm': _reduction(2),
        'aten::cumsum': _cumsum, 'aten::fft_rfft2': _fft2(2.5, size_of_output=False),
        'aten::fft_irfft2': _fft2(2.5, size_of_output=True), 'aten::fft_fft2': _fft2(5, size_of_output=True),
        'aten::matmul': _matmul, 'aten::scaled_dot_product_attention': _sdpa})
    return handles


class _TensorForward(torch.nn.Module):
    """``model(x, mode='tensor')`` as a one-input module, what a jit trace needs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, mode='tensor')


def count_wttf_flops(model: torch.nn.Module, inputs: torch.Tensor) -> Dict[str, object]:
    """FLOPs of ``model(inputs, mode='tensor')`` as the efficient-ViT paper counts them (fvcore with
    the authors' per-op weights, :func:`wttf_op_handles`); needs ``pip install fvcore``.

    Returns ``wttf_flops`` and ``wttf_uncounted_ops`` (op -> calls that fvcore has no handle for,
    counted 0 as in the paper).
    """
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError as error:
        raise ImportError('--flops-convention wttf counts with fvcore: pip install "mmeff[analysis]" '
                          '(or pip install fvcore)') from error
    analysis = FlopCountAnalysis(_TensorForward(model).eval(), (inputs, ))
    analysis.set_op_handle(**wttf_op_handles())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    with torch.no_grad():
        total = analysis.total()
    return dict(wttf_flops=int(total), wttf_uncounted_ops=dict(analysis.unsupported_ops()))
