"""Reduced precision in PyTorch: which ones this machine runs, and the autocast that runs them.

One vocabulary for every tool: ``fp32`` (no autocast), ``bf16`` (CPUs whose oneDNN has bf16 kernels,
i.e. AVX512-BF16 or AMX; CUDA devices with bf16), ``fp16`` (CUDA only: PyTorch has no fast fp16 CPU path
before AVX512-FP16 / AMX-FP16, and oneDNN's emulation is slower than fp32). A precision the machine
cannot run raises :class:`PrecisionUnsupported` with the reason, never falls back silently.
"""
import contextlib
from typing import ContextManager

import torch

PRECISIONS = ('fp32', 'bf16', 'fp16')
DTYPES = dict(bf16=torch.bfloat16, fp16=torch.float16)
NO_CPU_BF16 = 'this CPU has no bf16 kernels (needs AVX512-BF16 or AMX-BF16; see lscpu)'


class PrecisionUnsupported(RuntimeError):
    """This machine cannot run the precision; the message says why (tests skip on it for the hardware)."""


def cpu_supports_bf16() -> bool:
    """oneDNN has bf16 kernels for this CPU (AVX512-BF16 or AMX-BF16)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_precision(precision: str, device: str = 'cpu') -> None:
    """Raise ``ValueError`` for an unknown name, :class:`PrecisionUnsupported` for one ``device`` cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}; choose from {PRECISIONS}')
    if precision == 'fp32':
        return
    if device.startswith('cuda'):
        if precision == 'bf16' and not torch.cuda.is_bf16_supported():
            raise PrecisionUnsupported(f'this GPU ({torch.cuda.get_device_name(device)}) has no bf16: use fp16')
        return
    if precision == 'fp16':
        raise PrecisionUnsupported('fp16 runs on CUDA devices only: on a CPU use bf16 (AVX512-BF16 or AMX) or an '
                                   'INT8 deployment (OpenVINO)')
    if not cpu_supports_bf16():
        raise PrecisionUnsupported(f'{NO_CPU_BF16}: use fp32, or an INT8 deployment (OpenVINO)')


def autocast(precision: str, device: str = 'cpu') -> ContextManager:
    """``torch.autocast`` at ``precision`` on ``device`` (after :func:`check_precision`); fp32: no autocast."""
    check_precision(precision, device)
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(':')[0], dtype=DTYPES[precision])
