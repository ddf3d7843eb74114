"""Checkpoint loading on torch >= 2.6: mmengine's checkpoints load, pickled code is refused."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmeff.engine import UnsafeCheckpointError, checkpoint_loading


class Payload:
    """Stands for pickled code: unpickling it calls os.getpid (harmless, but any callable would do)."""

    def __reduce__(self):
        return os.getpid, ()


@pytest.fixture
def files(tmp_path):
    weights = {'state_dict': {'w': torch.randn(3)}}
    buffer = HistoryBuffer()
    buffer.update(1.5)
    mmengine_style = dict(weights, meta={'seed': np.int64(3)}, message_hub={'loss': buffer, 'arr': np.ones(2)})
    paths = {}
    for name, obj in dict(weights=weights, mmengine=mmengine_style, code=dict(weights, meta=Payload())).items():
        paths[name] = str(tmp_path / f'{name}.pth')
        torch.save(obj, paths[name])
    return paths


def test_mmengine_checkpoints_load_only_inside_the_context(files):
    assert torch.equal(torch.load(files['weights'])['state_dict']['w'],
                       torch.load(files['weights'], weights_only=False)['state_dict']['w'])
    with pytest.raises(pickle.UnpicklingError):
        torch.load(files['mmengine'])  # torch's default, untouched by importing mmeff
    with checkpoint_loading():
        ckpt = torch.load(files['mmengine'])
    assert ckpt['message_hub']['loss'].current() == 1.5 and ckpt['meta']['seed'] == 3
    with pytest.raises(pickle.UnpicklingError):
        torch.load(files['mmengine'])  # and restored afterwards


def test_pickled_code_is_refused_with_the_opt_in_named(files):
    with pytest.raises(UnsafeCheckpointError, match=r'trust_checkpoint = True.*--trust-checkpoint'):
        with checkpoint_loading():
            torch.load(files['code'])
    with checkpoint_loading(trust=True):
        assert torch.load(files['code'])['meta'] == os.getpid()
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    with pytest.raises(pickle.UnpicklingError):
        torch.load(files['code'])
