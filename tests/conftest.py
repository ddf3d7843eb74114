import os
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Reference data shipped with the tests: the names and shapes of every state-dict entry of the 13
# official RT-DETR (v1/v2) checkpoints (lyuwenyu/RT-DETR).
RTDETR_KEYS_DIR = Path(REPO) / 'tests' / 'data' / 'rtdetr_official_keys'

DET_DEMO = 'configs/mixing/rtmdet_tiny_demo-256.py'
CLS_DEMO = 'configs/mixing/resnet18_demo-64.py'
# a few images, no workers, seeded: short reproducible runs of the demo configs
SMALL = ['train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=8',
         'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
         'test_dataloader.persistent_workers=False', 'randomness.seed=0', 'randomness.deterministic=True']


# In CI (``CI=true`` or ``MMEFF_STRICT_SKIPS=1``, which .ci/run sets) a skip fails the run unless it
# is for hardware this machine lacks (a GPU, TensorRT, a CPU feature): every dependency is installed
# there, so any other skip is a broken set-up or a test that silently stopped testing.
STRICT_SKIPS = os.environ.get('CI', '').lower() == 'true' or os.environ.get('MMEFF_STRICT_SKIPS') == '1'
HARDWARE_SKIP = 'depends on the hardware: '


def skip_for_hardware(reason: str):
    """Skip a test that cannot run on this machine's hardware (a GPU, TensorRT, a CPU feature; the only
    skip CI accepts)."""
    pytest.skip(HARDWARE_SKIP + reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if STRICT_SKIPS and report.skipped and not hasattr(report, 'wasxfail'):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if HARDWARE_SKIP not in reason:
            report.outcome = 'failed'
            report.longrepr = (f'unexpected skip in CI: {reason!r}. Only skips for missing hardware '
                               '(conftest.skip_for_hardware) are allowed here; everything else is installed.')


def run_tool_cmd(command, timeout=900, env=None, check=True):
    """Run ``command`` from the repo root, as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, osp.join(REPO, 'tests'), os.environ.get('PYTHONPATH',
                                                                                                          '')]))
    full_env.update(env or {})
    proc = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{command} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-6000:]}')
    return proc


def run_tool(*args, timeout=900, env=None, check=True):
    """Run ``python <args>`` from the repo root, as a user would; returns the CompletedProcess."""
    return run_tool_cmd([sys.executable, *args], timeout=timeout, env=env, check=check)


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
def trained_rtdetr_demo(tmp_path_factory):
    """``(config, checkpoint)`` of the RT-DETR demo trained as ``tools/demo.sh`` trains it (its 8 epochs on the
    whole demo set, seed 0): scores that separate objects from background, so that what a backend or a
    precision costs shows in the detections and the mAP. ``MMEFF_DEMO_CHECKPOINT`` reuses one (e.g. the
    ``epoch_8.pth`` tools/demo.sh wrote)."""
    config = osp.join(REPO, 'configs', 'rtdetr', 'rtdetr_r18vd_demo-256.py')
    if os.environ.get('MMEFF_DEMO_CHECKPOINT'):
        return config, os.environ['MMEFF_DEMO_CHECKPOINT']
    work_dir = tmp_path_factory.mktemp('rtdetr_demo')
    no_workers = [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
                  for key in ('num_workers=0', 'persistent_workers=False')]
    run_tool('tools/train.py', config, '--work-dir', str(work_dir), '--cfg-options', *no_workers, 'randomness.seed=0',
             timeout=3600)
    return config, str(work_dir / 'epoch_8.pth')


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
