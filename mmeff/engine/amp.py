"""Mixed-precision training (``tools/train.py --amp``) on the device the runner trains on.

With a GPU (or an NPU, MLU, MUSA device) ``--amp`` is mmengine's ``AmpOptimWrapper``: fp16 autocast with
dynamic loss scaling. mmengine's wrapper refuses a CPU (it is built on CUDA's ``GradScaler``), so on a CPU
``--amp`` is :class:`CPUAmpOptimWrapper`: bf16 autocast, on CPUs whose oneDNN has bf16 kernels
(AVX512-BF16 or AMX-BF16). On other CPUs it is refused before the model or the data are built.
"""
from contextlib import contextmanager

import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmeff.registry import CLS_OPTIM_WRAPPERS, DET_OPTIM_WRAPPERS
from mmeff.utils import precision
from mmeff.utils.precision import NO_CPU_BF16, PrecisionUnsupported, autocast

AMP_WRAPPERS = ('AmpOptimWrapper', 'CPUAmpOptimWrapper')  # the optim wrappers that are mixed-precision


def check_cpu_amp() -> None:
    """Raise :class:`PrecisionUnsupported`, saying why and what to do, if this CPU cannot train in bf16."""
    if not precision.cpu_supports_bf16():
        raise PrecisionUnsupported(f'--amp on a CPU trains with bf16 autocast, but {NO_CPU_BF16}. Train without '
                                   '--amp (fp32), or on a GPU (where --amp is fp16 with loss scaling).')


def amp_optim_wrapper(optim_wrapper: dict, device: str) -> dict:
    """``optim_wrapper`` (a config of a full-precision wrapper) made mixed-precision for training on
    ``device`` (mmengine's ``get_device()``: 'cpu', 'cuda', ...).

    Raises:
        PrecisionUnsupported: on a CPU without bf16 kernels (:func:`check_cpu_amp`).
    """
    if device != 'cpu':
        return {**optim_wrapper, 'type': 'AmpOptimWrapper', 'loss_scale': optim_wrapper.get('loss_scale', 'dynamic')}
    check_cpu_amp()
    return {**optim_wrapper, 'type': 'CPUAmpOptimWrapper'}


@DET_OPTIM_WRAPPERS.register_module()
@CLS_OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` with the forward and the loss (``optim_context``) under
    ``torch.autocast('cpu', torch.bfloat16)``: convolutions and matrix products run in bf16, while the
    parameters, their gradients, the optimizer state and the checkpoints stay fp32.

    No loss scaling: bf16 has fp32's 8-bit exponent, so small gradients do not underflow (fp16's
    ``GradScaler`` exists for its 5-bit one).

    Raises:
        PrecisionUnsupported: on a CPU without bf16 kernels (:func:`check_cpu_amp`).
    """

    def __init__(self, **kwargs):
        check_cpu_amp()
        super().__init__(**kwargs)

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), autocast('bf16', 'cpu'):
            yield
