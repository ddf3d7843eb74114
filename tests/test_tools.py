"""tools/train.py, tools/test.py and tools/dist_train.sh as a user runs them, on the demo data."""
import os.path as osp
import pickle

import pytest
import torch
from conftest import REPO, run_tool

DET_DEMO = 'configs/demo/rtmdet_tiny_demo.py'
CLS_DEMO = 'configs/demo/resnet18_demo.py'
# a few images and no random augmentation, so that runs are short and reproducible
SMALL = ['train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=8',
         'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
         'test_dataloader.persistent_workers=False', 'randomness.seed=0', 'randomness.deterministic=True']


def _config(tmp_path, base, body):
    """A config file that `_base_`s on a repo config and overrides what the command line can't."""
    path = tmp_path / 'derived_config.py'
    path.write_text(f'_base_ = [{osp.join(REPO, base)!r}]\n{body}')
    return str(path)


def _train(config, work_dir, epochs, *extra):
    return run_tool('tools/train.py', config, '--work-dir', str(work_dir), *extra, '--cfg-options', *SMALL,
                    f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}')


def _final_state(work_dir, epoch):
    return torch.load(osp.join(work_dir, f'epoch_{epoch}.pth'), map_location='cpu', weights_only=False)


def test_detector_trains_and_evaluates(tmp_path):
    proc = _train(DET_DEMO, tmp_path, 1)
    log = proc.stdout + proc.stderr
    assert 'coco/bbox_mAP' in log, log[-3000:]
    assert osp.isfile(tmp_path / 'epoch_1.pth')
    out = tmp_path / 'preds.pkl'
    run_tool('tools/test.py', DET_DEMO, str(tmp_path / 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test'),
             '--out', str(out), '--cfg-options', *SMALL)
    preds = pickle.load(open(out, 'rb'))
    assert len(preds) == 8 and 'pred_instances' in preds[0]


def test_classifier_trains_and_evaluates(tmp_path):
    proc = _train(CLS_DEMO, tmp_path, 1)
    assert 'accuracy/top1' in proc.stdout + proc.stderr


def test_resume_reproduces_uninterrupted_training(tmp_path):
    """2 epochs straight == 1 epoch, then --resume for the second: same weights, optimizer and lr.

    Without random augmentation: mmengine does not checkpoint the augmentation RNG streams.
    """
    config = _config(tmp_path, DET_DEMO, "train_dataloader = dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile'), "
                     "dict(type='LoadAnnotations', with_bbox=True), dict(type='Resize', scale=(256, 256), keep_ratio=False), "
                     "dict(type='PackDetInputs')]))")
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    _train(config, straight, 2)
    _train(config, split, 1)
    proc = _train(config, split, 2, '--resume')
    assert 'resumed epoch: 1' in (proc.stdout + proc.stderr).replace('Resumed', 'resumed').lower()
    a, b = _final_state(straight, 2), _final_state(split, 2)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    diffs = {k: (a['state_dict'][k].float() - b['state_dict'][k].float()).abs().max().item() for k in a['state_dict']}
    print('max abs weight diff after resume:', max(diffs.values()))
    assert max(diffs.values()) < 1e-6
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.allclose(state_a[key]['exp_avg'], state_b[key]['exp_avg'], atol=1e-7)
        assert state_a[key]['step'] == state_b[key]['step']
    assert a['param_schedulers'] == b['param_schedulers']


def test_two_process_distributed_run(tmp_path, repo):
    """Two CPU processes (gloo) through torchrun + mmengine's launcher; both ranks must finish."""
    config = _config(tmp_path, DET_DEMO, "custom_imports = dict(imports=['mmeff', 'helpers.rank_marker'])\n"
                     "custom_hooks = [dict(type='RankMarkerHook')]")
    proc = run_tool('-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29531', 'tools/train.py',
                    config, '--launcher', 'pytorch', '--work-dir', str(tmp_path), '--cfg-options', *SMALL,
                    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', timeout=900)
    for rank in (0, 1):
        world_size, iters = open(tmp_path / f'rank{rank}.done').read().split()
        assert world_size == '2' and int(iters) == 1  # 16 images / (2 ranks x 8 per batch)
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr


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
