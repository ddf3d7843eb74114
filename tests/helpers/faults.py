"""Test-only hooks that fail a training run the hard way (imported via custom_imports)."""
import os
import signal

from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class KillDuringSaveHook(Hook):
    """SIGKILLs the process half-way through writing the checkpoint of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if checkpoint['meta']['epoch'] != self.epoch:
            return

        def put_half_then_die(backend, obj, filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            _kill_self()

        LocalBackend.put = put_half_then_die


@HOOKS.register_module()
class KillAtIterHook(Hook):
    """SIGKILLs the process before training iteration ``iter`` (0-based, counted over the run)."""

    def __init__(self, iter: int) -> None:
        self.iter = iter

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.iter:
            _kill_self()
