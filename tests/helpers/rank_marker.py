"""Test-only hook: every rank writes a marker file when its run ends, with a hash of its model's
parameters at the start and at the end of training (imported via custom_imports)."""
import hashlib
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def parameter_hash(model: torch.nn.Module) -> str:
    model = model.module if is_model_wrapper(model) else model
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@HOOKS.register_module()
class RankMarkerHook(Hook):

    def before_train(self, runner) -> None:
        self.start = parameter_hash(runner.model)

    def after_run(self, runner) -> None:
        with open(osp.join(runner.work_dir, f'rank{get_rank()}.done'), 'w') as f:
            f.write(f'{get_world_size()} {runner.iter} {self.start} {parameter_hash(runner.model)}\n')
