"""Test-only hook: what a training run computed in, written to ``<work_dir>/dtype_probe.json`` when it ends —
the output dtypes of the model's convolutions and linear layers in the first iteration, the total
loss of every iteration and its dtype (imported via custom_imports)."""
import json
import os.path as osp

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DtypeProbeHook(Hook):

    def before_train(self, runner) -> None:
        self.dtypes, self.losses, self.loss_dtypes, self.handles = {}, [], set(), []
        for module in runner.model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                self.handles.append(module.register_forward_hook(self._record))

    def _record(self, module, inputs, output) -> None:
        self.dtypes.setdefault(type(module).__name__, set()).add(str(output.dtype))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        for handle in self.handles:  # the first iteration tells the dtypes
            handle.remove()
        self.handles = []
        self.losses.append(float(outputs['loss']))
        self.loss_dtypes.add(str(outputs['loss'].dtype))

    def after_train(self, runner) -> None:
        with open(osp.join(runner.work_dir, 'dtype_probe.json'), 'w') as f:
            json.dump(dict(dtypes={k: sorted(v) for k, v in self.dtypes.items()}, losses=self.losses,
                           loss_dtypes=sorted(self.loss_dtypes)), f)
