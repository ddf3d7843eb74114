"""Checkpoints that load safely on torch >= 2.6, and saves that survive a kill.

**Loading.** torch unpickles with ``weights_only=True`` by default, which refuses the Python
objects that mmengine 0.10.7 writes next to the weights (the message hub's ``HistoryBuffer``,
numpy arrays and scalars), so mmengine's ``--resume`` and every OpenMMLab API that reads a
checkpoint (``DetInferencer``, ``init_detector``, ``ImageClassificationInferencer``,
``mmpretrain.get_model``, ``load_from``) would fail on them. Importing mmeff allow-lists exactly
those types in torch's safe unpickler; ``weights_only`` stays on, so a file that holds anything
else (pickled code) is still refused. mmeff's tools name the explicit opt-in for files whose
origin the user trusts (``trust_checkpoint = True`` in the config, ``--trust-checkpoint``).

**Saving.** mmengine writes a checkpoint in place and its ``CheckpointHook`` removes the outdated
one before writing the new one, so a kill or a full disk during a save left a truncated newest
file, and with ``max_keep_ckpts=1`` nothing intact. ``MMEffRunner`` writes to a temporary file,
flushes it to disk and renames it over the target (:func:`save_atomically`);
:class:`SafeCheckpointHook` removes outdated checkpoints only after the new one is in place, and
auto-resume skips a checkpoint that does not load (:func:`newest_intact_checkpoint`).
"""
import glob
import logging
import os
import os.path as osp
import pickle
import re
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.registry import HOOKS

# What mmengine 0.10.7's Runner.save_checkpoint writes besides tensors and containers. `getattr`
# restores HistoryBuffer's statistics methods; torch's restricted unpickler calls only the callables
# listed here, so an attribute read through it cannot be called.
MMENGINE_CHECKPOINT_TYPES = (
    HistoryBuffer,
    getattr,
    np.ndarray,
    np.dtype,
    np.core.multiarray._reconstruct,
    np.core.multiarray.scalar,
    *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.uint32, np.bool_)},
)
torch.serialization.add_safe_globals(list(MMENGINE_CHECKPOINT_TYPES))

TRUST_HINT = ('If you trust the origin of this file, opt in to loading it with pickle: set '
              '`trust_checkpoint = True` in the config (tools/train.py, test.py, benchmark.py, deploy.py: '
              '--trust-checkpoint).')
# Names CheckpointHook gives periodic checkpoints (filename_tmpl 'epoch_{}.pth' / 'iter_{}.pth').
PERIODIC_CHECKPOINT = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that would execute pickled code to load, refused by default."""


@contextmanager
def checkpoint_loading(trust: bool = False) -> Iterator[None]:
    """Within this context ``torch.load`` accepts any pickle if ``trust``; otherwise a refused file
    raises :class:`UnsafeCheckpointError` naming the opt-in. Outside it torch's defaults (with
    mmengine's types allow-listed) apply."""
    if trust:
        previous = os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
            else:
                os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = previous
        return
    try:
        yield
    except pickle.UnpicklingError as e:
        if 'Weights only load failed' not in str(e):
            raise
        raise UnsafeCheckpointError(
            'refused to load a checkpoint: it contains Python objects that are neither tensors nor the '
            f'types mmengine writes, and unpickling them could run code. {TRUST_HINT}\n'
            f'torch said: {str(e).splitlines()[0]}') from e


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_path(path: str) -> str:
    """Where the checkpoint ``path`` is written before it is renamed into place."""
    return osp.join(osp.dirname(path), f'.{osp.basename(path)}.partial')


def save_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` a file, flush it to disk, then rename it to ``path``: a reader sees the old
    file or the whole new one, never a part (a kill leaves only ``partial_path(path)`` behind)."""
    tmp = partial_path(path)
    write(tmp)
    if not osp.isfile(tmp):  # not this process's file to write (another rank's save)
        return
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(osp.dirname(osp.abspath(path)))


def checkpoint_error(path: str, trust: bool = False) -> Optional[str]:
    """Why ``path`` does not load (truncated, corrupt, missing), or None if it loads. A file that
    loads only with pickle raises :class:`UnsafeCheckpointError` rather than being skipped."""
    try:
        with checkpoint_loading(trust):
            torch.load(path, map_location='cpu')
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # truncated zip archives, bad pickles, missing files: all "does not load"
        return f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    return None


def newest_intact_checkpoint(work_dir: str, trust: bool = False) -> Optional[str]:
    """The newest periodic checkpoint that loads: the one ``last_checkpoint`` names and every
    ``epoch_*.pth`` / ``iter_*.pth`` beside it, newest step first; each that does not load is
    skipped with a warning naming it."""
    named = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    folders = {work_dir} | ({osp.dirname(named)} if named else set())
    candidates = {named} if named else set()
    for folder in folders:
        candidates |= {p for p in glob.glob(osp.join(folder, '*.pth')) if PERIODIC_CHECKPOINT.match(osp.basename(p))}

    def step(path):
        match = PERIODIC_CHECKPOINT.match(osp.basename(path))
        return int(match.group(1)) if match else -1

    for path in sorted(candidates, key=lambda p: (step(p), p == named), reverse=True):
        error = checkpoint_error(path, trust)
        if error is None:
            return path
        print_log(f'skipping checkpoint {path}: it does not load ({error}); trying an older one', logger='current',
                  level=logging.WARNING)
    return None


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, removing outdated checkpoints (``max_keep_ckpts``) only after
    the new one is saved; mmengine removes them first, so a failed save could leave none.
    ``MMEffRunner`` uses it in place of ``CheckpointHook``; the arguments are the same."""

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            # in the message hub before the save, so that the checkpoint lists itself as kept
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        max_keep, self.max_keep_ckpts = self.max_keep_ckpts, -1  # the parent would remove before saving
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self.max_keep_ckpts = max_keep
        if not is_main_process():
            return
        for old in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)
