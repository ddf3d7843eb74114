"""Random streams that survive a checkpoint, so that kill + ``--resume`` equals the uninterrupted run.

mmengine checkpoints the weights, optimizer, schedulers and message hub, but none of the random
streams training draws from: after a resume, augmentation, RT-DETR's denoising noise, dropout and
multi-scale sizes start again from the seed. Two mechanisms make them exact:

- **Per-sample seeds for the data pipeline** (:class:`SampleSeededSampler`): every training sample
  is loaded with python's, numpy's and torch's RNGs seeded from ``(seed, rank, epoch, position)``,
  so its augmentation depends on nothing else: not on the worker that loads it, on what the worker
  loaded before, or on whether the workers were restarted (persistent workers, a pipeline switch,
  a resume). mmengine's workers are otherwise seeded once, identically in every epoch.
- **The main process's streams** (:class:`RandomStateHook`): captured at the end of every training
  epoch (iteration-based loops: iteration), saved in the checkpoint (every rank's), restored before
  the next training iteration, so that validation in between does not shift them either.
"""
import logging
import random
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, sync_random_seed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, HOOKS
from mmengine.runner import BaseLoop, IterBasedTrainLoop
from torch.utils.data import Dataset, Sampler

DataBatch = Optional[Sequence[dict]]


def get_rng_state() -> dict:
    """This process's python, numpy and torch (CPU and every CUDA device) random states."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Within the context python, numpy and torch's CPU generator draw from ``seed``; outside it
    the streams continue as if the context had not drawn (CUDA generators are not touched)."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SeededIndex(int):
    """A dataset index that carries the seed its sample is loaded with."""

    def __new__(cls, index: int, seed: int) -> 'SeededIndex':
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):  # through the workers' index queues
        return SeededIndex, (int(self), self.seed)


class SeededFetch:
    """``dataset.__getitems__`` for torch's fetcher: loads each sample under its own seed.

    Set as an instance attribute, so that the dataset keeps its class (hooks such as mmdet's
    ``PipelineSwitchHook`` reach into it) and goes to the workers with it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __call__(self, indices: List[int]) -> list:
        samples = []
        for index in indices:
            if isinstance(index, SeededIndex):
                with seeded_rng(index.seed):
                    samples.append(self.dataset[int(index)])
            else:
                samples.append(self.dataset[index])
        return samples


def sample_seed(seed: int, rank: int, epoch: int, position: int) -> int:
    """A 32-bit seed for one sample; independent streams for different arguments."""
    return int(np.random.SeedSequence([seed, rank, epoch, position]).generate_state(1)[0])


@DATA_SAMPLERS.register_module()
class SampleSeededSampler(Sampler):
    """Any sampler, with every index it yields carrying a seed ``(seed, rank, epoch, position)``.

    The dataset loads each sample under that seed (:class:`SeededFetch`), so a sample's augmentation
    is a function of the seed, the epoch and its position only, and a resumed run draws exactly what
    the uninterrupted one drew. ``MMEffRunner`` wraps the training sampler in it; in your own
    configs: ``sampler=dict(type='SampleSeededSampler', sampler=dict(type='DefaultSampler',
    shuffle=True))``.

    Args:
        dataset (Dataset): The dataset (mmengine's dataloader builder passes it).
        sampler (dict): The config of the sampler that decides the order.
        seed (int, optional): Base seed (the runner's); a random one shared by the ranks if None.
    """

    def __init__(self, dataset: Dataset, sampler: dict, seed: Optional[int] = None) -> None:
        self.dataset = dataset  # mmdet's batch samplers read it
        self.sampler = DATA_SAMPLERS.build(sampler, default_args=dict(dataset=dataset, seed=seed))
        self.seed = sync_random_seed() if seed is None else seed
        self.rank = get_rank()
        self.epoch = 0
        if isinstance(getattr(dataset, '__getitems__', None), SeededFetch):
            raise ValueError('the dataset is already loaded under per-sample seeds by another SampleSeededSampler')
        dataset.__getitems__ = SeededFetch(dataset)

    def __iter__(self) -> Iterator[SeededIndex]:
        epoch = getattr(self.sampler, 'epoch', self.epoch)
        for position, index in enumerate(self.sampler):
            yield SeededIndex(index, sample_seed(self.seed, self.rank, epoch, position))

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)


def with_sample_seeds(dataloader_cfg: dict) -> dict:
    """The dataloader config with its sampler wrapped in :class:`SampleSeededSampler` (unchanged
    if it is not a config, or already wrapped)."""
    sampler = dataloader_cfg.get('sampler')
    if not isinstance(dataloader_cfg, dict) or not isinstance(sampler, dict) \
            or sampler.get('type') in ('SampleSeededSampler', SampleSeededSampler):
        return dataloader_cfg
    return {**dataloader_cfg, 'sampler': dict(type='SampleSeededSampler', sampler=sampler)}


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Keeps the training process's random streams across validation, checkpoints and resumes.

    The state is captured when a training epoch (iteration-based loops: iteration) ends and
    restored before the next training iteration, so that whatever draws in between (validation, a
    new dataloader iterator drawing its base seed) does not shift the training streams; the captured
    states of all ranks go into the checkpoint (``rng_state``) and come back on resume. The priority
    is below every other hook's end-of-step work and above ``CheckpointHook``'s (``VERY_LOW``), so
    the saved state is the one the next step starts from.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._state: Optional[dict] = None
        self._restore_pending = False
        self._per_iter = False

    def before_train(self, runner) -> None:
        self._per_iter = isinstance(runner.train_loop, IterBasedTrainLoop)

    def _capture(self) -> None:
        local = get_rng_state()
        self._state = dict(ranks=all_gather_object(local) if get_world_size() > 1 else [local])
        self._restore_pending = True

    def before_train_iter(self, runner, batch_idx: int, data_batch: DataBatch = None) -> None:
        if self._restore_pending:
            set_rng_state(self._state['ranks'][get_rank()])
            self._restore_pending = False

    def after_train_iter(self, runner, batch_idx: int, data_batch: DataBatch = None, outputs=None) -> None:
        if self._per_iter:
            self._capture()

    def after_train_epoch(self, runner) -> None:
        if not self._per_iter:
            self._capture()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._state is None:  # a checkpoint saved outside the epoch/iteration ends
            self._capture()
        checkpoint['rng_state'] = self._state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume or not isinstance(runner._train_loop, BaseLoop):
            return  # load_from, or not training: weights only, the streams start from the seed
        state = checkpoint.get('rng_state')
        if state is None:
            print_log('the checkpoint has no random state (not written by MMEffRunner): augmentation and '
                      'other random draws continue from the seed, not where the run stopped', logger='current',
                      level=logging.WARNING)
        elif len(state['ranks']) != get_world_size():
            print_log(f'the checkpoint holds the random state of {len(state["ranks"])} processes, this run has '
                      f'{get_world_size()}: random draws continue from the seed', logger='current',
                      level=logging.WARNING)
        else:
            self._state, self._restore_pending = state, True
        seed = checkpoint.get('meta', {}).get('seed')
        sampler = getattr(runner._train_loop.dataloader, 'sampler', None)
        for part in (sampler, getattr(sampler, 'sampler', None)):
            if seed is not None and hasattr(part, 'seed'):
                part.seed = seed  # the order and per-sample seeds of the resumed run, even without a config seed
