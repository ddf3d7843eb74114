"""mmeff's Runner: mmengine's, made to work on torch 2.14 and on CPU-only machines, with
checkpoints that survive a kill and resumes that continue exactly where the run stopped."""
import datetime
import logging
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmeff.registry import RUNNERS

from .checkpoint import checkpoint_loading, newest_intact_checkpoint, save_atomically
from .randomness import RandomStateHook, with_sample_seeds


@RUNNERS.register_module()
class MMEffRunner(Runner):
    """mmengine's ``Runner``, selected by ``runner_type = 'MMEffRunner'`` (mmeff's tools use it by
    default), with these changes:

    - checkpoint loads (``load_from``, ``resume``, pretrained ``init_cfg``) go through
      :func:`~mmeff.engine.checkpoint.checkpoint_loading`: a file that holds pickled code is refused
      with an error naming the opt-in ``trust_checkpoint = True``;
    - checkpoints are written atomically (temporary file, flush, rename), outdated ones removed only
      after the new one is saved (``SafeCheckpointHook`` in place of ``CheckpointHook``), and
      auto-resume (``resume=True`` without ``load_from``) takes the newest checkpoint that loads;
    - exact resume: training samples are loaded under per-sample seeds (``SampleSeededSampler``
      around the training sampler) and the main process's random streams are checkpointed
      (``RandomStateHook``), so kill + resume equals the uninterrupted run;
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

    def register_default_hooks(self, hooks=None) -> None:
        hooks = dict(hooks or {})
        checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        if isinstance(checkpoint, dict) and checkpoint.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
            hooks['checkpoint'] = {**checkpoint, 'type': 'SafeCheckpointHook'}
        super().register_default_hooks(hooks)

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        if not any(isinstance(hook, RandomStateHook) for hook in self._hooks):
            self.register_hook(RandomStateHook())

    def build_train_loop(self, loop):
        self._train_dataloader = with_sample_seeds(self._train_dataloader)
        return super().build_train_loop(loop)

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        if '://' in out_dir:  # a remote file backend: its own semantics
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        save_atomically(osp.join(out_dir, filename),
                        lambda tmp: super(MMEffRunner, self).save_checkpoint(out_dir, osp.relpath(tmp, out_dir),
                                                                              *args, **kwargs))

    def load_or_resume(self) -> None:
        if self._resume and self._load_from is None and not self._has_loaded:
            with checkpoint_loading(self._trusted()):
                self._load_from = newest_intact_checkpoint(self.work_dir, self._trusted())
            if self._load_from is None:
                print_log(f'no checkpoint to resume from in {self.work_dir}: training starts from the beginning',
                          logger='current', level=logging.WARNING)
                self._resume = False
        super().load_or_resume()

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
