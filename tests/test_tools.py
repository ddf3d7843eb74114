"""tools/train.py, tools/test.py and tools/dist_train.sh as a user runs them, on the demo data."""
import os
import os.path as osp
import pickle
import re
import sys

import pytest
import torch
from mmengine.config import Config

import mmeff  # noqa: F401  (mmengine's checkpoint types allow-listed for torch.load)
from mmeff.engine.checkpoint import partial_path

from conftest import CLS_DEMO, DET_DEMO, REPO, SMALL, run_tool, run_tool_cmd, train_demo

RTDETR_DEMO = 'configs/rtdetr/rtdetr_r18vd_demo-256.py'


def _config(tmp_path, base, body, name='derived_config.py'):
    """A config file that `_base_`s on a repo config and overrides what the command line can't."""
    path = tmp_path / name
    path.write_text(f'_base_ = [{osp.join(REPO, base)!r}]\n{body}')
    return str(path)


def _load(path):
    return torch.load(path, map_location='cpu')  # weights_only, as torch's default


def test_detector_trains_and_evaluates(trained_demos, tmp_path):
    config, checkpoint, log = trained_demos['det']
    assert 'coco/bbox_mAP' in log, log[-3000:]
    out = tmp_path / 'preds.pkl'
    run_tool('tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'test'), '--out', str(out),
             '--cfg-options', *SMALL)
    preds = pickle.load(open(out, 'rb'))
    assert len(preds) == 8 and 'pred_instances' in preds[0]


def test_classifier_trains_and_evaluates(trained_demos):
    assert 'accuracy/top1' in trained_demos['cls'][2]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0) for k in a)


def test_kill_and_resume_equals_the_uninterrupted_run(tmp_path):
    """RT-DETR demo, its random augmentation, multi-scale batches, denoising, EMA and 2 persistent
    workers: 3 epochs straight == killed (SIGKILL) in epoch 3, then ``--resume``; bit for bit."""
    hooks = Config.fromfile(osp.join(REPO, RTDETR_DEMO)).to_dict()['custom_hooks']
    killing = _config(tmp_path, RTDETR_DEMO, f"custom_hooks = {hooks + [dict(type='KillAtIterHook', iter=5)]!r}\n"
                      "custom_imports = dict(imports=['mmeff', 'helpers.faults'], allow_failed_imports=False)",
                      'killing.py')
    options = ['train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8', 'randomness.seed=0',
               'randomness.deterministic=True', 'train_cfg.max_epochs=3', 'train_cfg.val_interval=1',
               'default_hooks.checkpoint.interval=1',  # 2 iterations an epoch, validation between epochs
               'model.data_preprocessor.batch_augments.0.sizes=(192,224,288)']  # never the input's 256
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    run_tool('tools/train.py', RTDETR_DEMO, '--work-dir', str(straight), '--cfg-options', *options)
    killed = run_tool('tools/train.py', killing, '--work-dir', str(split), '--cfg-options', *options, check=False)
    assert killed.returncode == -9 and not osp.exists(split / 'epoch_3.pth')
    proc = run_tool('tools/train.py', RTDETR_DEMO, '--work-dir', str(split), '--resume', '--cfg-options', *options)
    assert 'resumed epoch: 2, iter: 4' in proc.stdout + proc.stderr

    a, b = _load(straight / 'epoch_3.pth'), _load(split / 'epoch_3.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 6
    diffs = dict(weights=_max_diff(a['state_dict'], b['state_dict']),  # with BN statistics
                 ema=_max_diff(a['ema_state_dict'], b['ema_state_dict']))
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for moment in ('exp_avg', 'exp_avg_sq'):
        diffs[moment] = max((state_a[k][moment] - state_b[k][moment]).abs().max().item() for k in state_a)
    print('max abs diff, uninterrupted vs. killed + resumed:', diffs)
    assert all(diff == 0 for diff in diffs.values()), diffs
    assert all(state_a[k]['step'] == state_b[k]['step'] for k in state_a)
    assert a['param_schedulers'] == b['param_schedulers']


def _checkpointing(epochs, keep):
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}', 'default_hooks.checkpoint.interval=1',
            f'default_hooks.checkpoint.max_keep_ckpts={keep}']


def test_kill_during_a_save_leaves_the_last_checkpoint_intact(tmp_path):
    """SIGKILL half-way through writing epoch 2's checkpoint, with max_keep_ckpts=1: epoch 1's is
    still there and named by last_checkpoint, and auto-resume continues from it."""
    killing = _config(tmp_path, CLS_DEMO, "custom_hooks = [dict(type='KillDuringSaveHook', epoch=2)]\n"
                      "custom_imports = dict(imports=['mmeff', 'helpers.faults'], allow_failed_imports=False)")
    work_dir = tmp_path / 'work'
    options = [*SMALL, *_checkpointing(2, keep=1)]
    killed = run_tool('tools/train.py', killing, '--work-dir', str(work_dir), '--cfg-options', *options, check=False)
    assert killed.returncode == -9
    assert osp.getsize(partial_path(str(work_dir / 'epoch_2.pth'))) > 0  # the half-written file, under another name
    assert not osp.exists(work_dir / 'epoch_2.pth')
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'epoch_1.pth')
    assert _load(work_dir / 'epoch_1.pth')['meta']['epoch'] == 1

    proc = run_tool('tools/train.py', CLS_DEMO, '--work-dir', str(work_dir), '--resume', '--cfg-options', *options)
    assert 'resumed epoch: 1' in proc.stdout + proc.stderr
    assert _load(work_dir / 'epoch_2.pth')['meta']['epoch'] == 2
    assert not osp.exists(work_dir / 'epoch_1.pth')  # outdated, removed once epoch 2's was saved
    assert not osp.exists(partial_path(str(work_dir / 'epoch_2.pth')))


def test_auto_resume_skips_a_truncated_checkpoint(tmp_path):
    train_demo(CLS_DEMO, tmp_path, 2, '--cfg-options', *_checkpointing(2, keep=2))
    newest = tmp_path / 'epoch_2.pth'
    with open(newest, 'r+b') as f:
        f.truncate(os.path.getsize(newest) // 2)
    proc = run_tool('tools/train.py', CLS_DEMO, '--work-dir', str(tmp_path), '--resume', '--cfg-options', *SMALL,
                    *_checkpointing(3, keep=2))
    log = proc.stdout + proc.stderr
    assert f'skipping checkpoint {newest}: it does not load' in log and 'resumed epoch: 1' in log
    assert _load(tmp_path / 'epoch_3.pth')['meta']['epoch'] == 3


def _dist(script, *args):
    """``bash tools/<script> ...`` as a user runs it, with this interpreter."""
    return run_tool_cmd(['bash', f'tools/{script}', *args], env=dict(PYTHON=sys.executable, PORT='29531'))


def test_two_process_distributed_training_and_testing(trained_demos, tmp_path):
    """tools/dist_train.sh with 2 CPU processes (gloo): both ranks finish, their parameters are equal
    at the end and differ from the start (the gradients are all-reduced: each rank saw other images);
    tools/dist_test.sh collects every image's prediction and the metric of a one-process test."""
    config = _config(tmp_path, DET_DEMO, "custom_imports = dict(imports=['mmeff', 'helpers.rank_marker'])\n"
                     "custom_hooks = [dict(type='RankMarkerHook')]")
    work_dir = tmp_path / 'train'
    proc = _dist('dist_train.sh', config, '2', '--work-dir', str(work_dir), '--cfg-options', *SMALL,
                 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2')
    marks = [open(work_dir / f'rank{rank}.done').read().split() for rank in (0, 1)]
    for world_size, iters, start, end in marks:
        assert world_size == '2' and int(iters) == 2  # 16 images / (2 ranks x 8 per batch) x 2 epochs
        assert end != start
    assert marks[0][3] == marks[1][3], 'the ranks ended with different parameters: no all-reduce'
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr

    config, checkpoint, _ = trained_demos['det']
    out, single_out = tmp_path / 'dist.pkl', tmp_path / 'single.pkl'
    proc = _dist('dist_test.sh', config, checkpoint, '2', '--work-dir', str(tmp_path / 'test'), '--out', str(out),
                 '--cfg-options', *SMALL)
    single = run_tool('tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'single'), '--out',
                      str(single_out), '--cfg-options', *SMALL)
    dist_preds, single_preds = pickle.load(open(out, 'rb')), pickle.load(open(single_out, 'rb'))
    assert sorted(p['img_id'] for p in dist_preds) == sorted(p['img_id'] for p in single_preds)
    assert len(dist_preds) == 8
    metric = re.compile(r'coco/bbox_mAP: ([\d.]+)')
    assert metric.findall(proc.stdout + proc.stderr) == metric.findall(single.stdout + single.stderr) != []


def test_unknown_type_is_named(tmp_path):
    proc = run_tool('tools/train.py', DET_DEMO, '--work-dir', str(tmp_path), '--cfg-options',
                    'model.backbone.type=NoSuchBackbone', check=False)
    assert proc.returncode != 0
    assert 'NoSuchBackbone is not in the' in proc.stderr


def test_missing_data_root_is_named(tmp_path):
    proc = run_tool('tools/train.py', DET_DEMO, '--work-dir',
                    str(tmp_path), '--cfg-options', 'train_dataloader.dataset.data_root=/nonexistent/coco/',
                    check=False)
    assert proc.returncode != 0 and "data root '/nonexistent/coco/'" in proc.stderr


def test_auto_scale_lr(tmp_path):
    """--auto-scale-lr scales the learning rate by the total batch size over the config's
    `auto_scale_lr.base_batch_size` (the classifier demo: lr 1e-3 at 16); without it, it stops."""
    train_demo(CLS_DEMO, tmp_path, 1, '--auto-scale-lr', '--cfg-options', 'train_dataloader.batch_size=4')
    groups = _load(tmp_path / 'epoch_1.pth')['optimizer']['param_groups']
    assert [g['initial_lr'] for g in groups] == [pytest.approx(1e-3 * 4 / 16)] * len(groups)
    config = _config(tmp_path, CLS_DEMO, 'auto_scale_lr = None')
    proc = run_tool('tools/train.py', config, '--auto-scale-lr', '--work-dir', str(tmp_path / 'no_base'), check=False)
    assert proc.returncode != 0 and 'needs `auto_scale_lr = dict(base_batch_size=...)`' in proc.stderr
