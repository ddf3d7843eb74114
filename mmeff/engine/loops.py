"""Evaluation at a reduced precision: ``tools/test.py --precision {fp32,bf16,fp16}``."""
from typing import Sequence

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.runner import TestLoop
from mmengine.runner.loops import _update_losses
from mmengine.structures import BaseDataElement

from mmeff.registry import LOOPS
from mmeff.utils.precision import autocast, check_precision


def float32_predictions(sample: BaseDataElement) -> BaseDataElement:
    """``sample`` with every floating-point tensor of its data fields (nested elements included) in float32,
    in place: under autocast the heads' outputs are bf16 / fp16, which mmdet's and mmpretrain's metrics
    turn into numpy arrays (numpy has no bf16); integer fields (labels) are left as they are."""
    for key, value in sample.items():
        if isinstance(value, BaseDataElement):
            float32_predictions(value)
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(sample, key, value.float())
    return sample


@LOOPS.register_module()
class PrecisionTestLoop(TestLoop):
    """mmengine's ``TestLoop`` with the model's ``test_step`` under
    :func:`mmeff.utils.precision.autocast` at ``precision``, its predictions cast back to float32
    (:func:`float32_predictions`) before the evaluator sees them. The data loading and the metrics
    stay in full precision: only what a deployed model would run at the precision does.

    mmengine's own ``fp16=True`` is ``torch.autocast`` without a dtype check (on a CPU: bf16 whether or
    not oneDNN has bf16 kernels) and hands the bf16 predictions to the metrics.

    Args:
        precision: one of :data:`mmeff.utils.precision.PRECISIONS`, on the runner's device
            (:class:`~mmeff.utils.precision.PrecisionUnsupported` when the device cannot run it).
    """

    def __init__(self, runner, dataloader, evaluator, precision: str = 'fp32'):
        self.device = get_device()
        check_precision(precision, self.device)  # before the dataloader and the evaluator are built
        super().__init__(runner, dataloader, evaluator)
        self.precision = precision

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        self.runner.call_hook('before_test_iter', batch_idx=idx, data_batch=data_batch)
        with autocast(self.precision, self.device):
            outputs = self.runner.model.test_step(data_batch)
        outputs = [float32_predictions(output) for output in outputs]
        # mmengine's bookkeeping of the losses some models return at test time
        outputs, self.test_loss = _update_losses(outputs, self.test_loss)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook('after_test_iter', batch_idx=idx, data_batch=data_batch, outputs=outputs)


def test_at_precision(cfg: Config, precision: str) -> Config:
    """``cfg`` with its test loop a :class:`PrecisionTestLoop` at ``precision``; the precision is checked
    first, so that a machine that cannot run it is refused before anything is built."""
    check_precision(precision, get_device())
    test_cfg = dict(cfg.get('test_cfg') or {})
    if test_cfg.get('type', 'TestLoop') not in ('TestLoop', 'PrecisionTestLoop'):
        raise ValueError(f'test_cfg.type={test_cfg["type"]!r}: a reduced precision replaces mmengine\'s TestLoop '
                         'only; run this config at fp32')
    test_cfg.pop('fp16', None)  # mmengine's autocast switch, which the precision replaces
    cfg.test_cfg = dict(test_cfg, type='PrecisionTestLoop', precision=precision)
    return cfg
