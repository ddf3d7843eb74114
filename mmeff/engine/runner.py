"""mmeff's Runner: mmengine's, made to work on torch 2.14 and on CPU-only machines."""
import datetime
import os

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmeff.registry import RUNNERS

from .checkpoint import checkpoint_loading


@RUNNERS.register_module()
class MMEffRunner(Runner):
    """mmengine's ``Runner`` with two fixes, selected by ``runner_type = 'MMEffRunner'`` (mmeff's
    tools use it by default):

    - every checkpoint load (``load_from``, ``resume``, pretrained ``init_cfg``) goes through
      :func:`~mmeff.engine.checkpoint.checkpoint_loading`: mmengine's own checkpoints load with
      ``weights_only=True``, other pickles only with ``trust_checkpoint = True``;
    - ``--launcher pytorch`` works without CUDA: mmengine 0.10.7 calls ``torch.cuda.set_device``
      and gives DDP ``device_ids`` unconditionally, so on a CPU-only machine the process group is
      set up here, with gloo, and DDP wraps the model without device ids.
    """

    def _trusted(self) -> bool:
        return bool(self.cfg.get('trust_checkpoint', False))

    def setup_env(self, env_cfg: dict) -> None:
        if self.distributed and self.launcher == 'pytorch' and not is_distributed() \
                and not torch.cuda.is_available():
            dist_cfg = dict(env_cfg.get('dist_cfg', {}))
            if dist_cfg.pop('backend', 'gloo') != 'gloo':
                print_log('no CUDA device: the distributed backend is gloo', logger='current')
            timeout = dist_cfg.pop('timeout', None)
            if timeout is not None:
                dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
            torch_dist.init_process_group(
                backend='gloo', rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']), **dist_cfg)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        if self.distributed and not torch.cuda.is_available():
            defaults = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                            find_unused_parameters=self.cfg.get('find_unused_parameters', False))
            model_wrapper_cfg = {**defaults, **(model_wrapper_cfg or {}), 'device_ids': None}
        return super().wrap_model(model_wrapper_cfg, model)

    def train(self):
        with checkpoint_loading(self._trusted()):
            return super().train()

    def val(self):
        with checkpoint_loading(self._trusted()):
            return super().val()

    def test(self):
        with checkpoint_loading(self._trusted()):
            return super().test()

    def load_checkpoint(self, *args, **kwargs):
        with checkpoint_loading(self._trusted()):
            return super().load_checkpoint(*args, **kwargs)
