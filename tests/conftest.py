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
