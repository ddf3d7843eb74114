"""Test-only hook: every rank writes a marker file when its run ends (imported via custom_imports)."""
import os.path as osp

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankMarkerHook(Hook):

    def after_run(self, runner) -> None:
        with open(osp.join(runner.work_dir, f'rank{get_rank()}.done'), 'w') as f:
            f.write(f'{get_world_size()} {runner.iter}\n')
