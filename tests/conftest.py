import os
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The project's read-only reference data (official RT-DETR key lists, ...) lies beside the repo.
SHARED = Path(os.environ.get('MMEFF_SHARED', osp.join(osp.dirname(REPO), 'shared')))
RTDETR_KEYS_DIR = SHARED / 'reference' / 'rtdetr_official_keys'

DET_DEMO = 'configs/demo/rtmdet_tiny_demo.py'
CLS_DEMO = 'configs/demo/resnet18_demo.py'
# a few images, no workers, seeded: short reproducible runs of the demo configs
SMALL = ['train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=8',
         'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
         'test_dataloader.persistent_workers=False', 'randomness.seed=0', 'randomness.deterministic=True']


def run_tool(*args, timeout=900, env=None, check=True):
    """Run ``python <args>`` from the repo root, as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, osp.join(REPO, 'tests'), os.environ.get('PYTHONPATH', '')]))
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-6000:]}')
    return proc


def train_demo(config, work_dir, epochs, *extra, **kwargs):
    """``tools/train.py`` on a demo config for ``epochs`` epochs of 16 images (validation at the end)."""
    return run_tool('tools/train.py', config, '--work-dir', str(work_dir), *extra, '--cfg-options', *SMALL,
                    f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}', **kwargs)


@pytest.fixture(scope='session')
def trained_demos(tmp_path_factory):
    """One-epoch checkpoints of the demo detector and classifier, written by ``tools/train.py``:
    ``{'det': (config, checkpoint, train log), 'cls': (...)}``."""
    trained = {}
    for task, config in (('det', DET_DEMO), ('cls', CLS_DEMO)):
        work_dir = tmp_path_factory.mktemp(f'trained_{task}')
        proc = train_demo(config, work_dir, 1)
        trained[task] = (osp.join(REPO, config), str(work_dir / 'epoch_1.pth'), proc.stdout + proc.stderr)
    return trained


@pytest.fixture(scope='session')
def repo():
    return REPO


@pytest.fixture
def mmpretrain_scope():
    """Build from MMPretrain's registries whatever default scope an earlier test left behind."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.fixture
def mmdet_scope():
    """Build from MMDetection's registries whatever default scope an earlier test left behind."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
