"""Checkpoint loading that stays safe on torch >= 2.6.

torch now unpickles with ``weights_only=True`` by default, which refuses the Python objects that
mmengine 0.10.7 writes next to the weights (the message hub's ``HistoryBuffer``, numpy arrays), so
``--resume`` fails. Rather than turning ``weights_only`` off, mmeff keeps it on and allows exactly
the types mmengine's own checkpoints contain, for the duration of a run only. A file that holds
anything else (pickled code) is refused with an error that names the explicit opt-in
(``trust_checkpoint=True`` in the config, ``--trust-checkpoint`` on the tools), for files whose
origin the user trusts.
"""
import os
import pickle
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

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
    *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)},
)

TRUST_HINT = ('If you trust the origin of this file, opt in to loading it with pickle: set '
              '`trust_checkpoint = True` in the config (tools/train.py, test.py, benchmark.py, deploy.py: --trust-checkpoint).')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that would execute pickled code to load, refused by default."""


@contextmanager
def checkpoint_loading(trust: bool = False) -> Iterator[None]:
    """Within this context ``torch.load`` accepts mmengine's checkpoints (or, with ``trust``, any
    pickle); outside it torch's defaults are untouched."""
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
        with torch.serialization.safe_globals(list(MMENGINE_CHECKPOINT_TYPES)):
            yield
    except pickle.UnpicklingError as e:
        if 'Weights only load failed' not in str(e):
            raise
        raise UnsafeCheckpointError(
            'refused to load a checkpoint: it contains Python objects that are neither tensors nor the '
            f'types mmengine writes, and unpickling them could run code. {TRUST_HINT}\n'
            f'torch said: {str(e).splitlines()[0]}') from e
