"""Checkpoints on torch >= 2.6: mmeff's load in every OpenMMLab API with ``weights_only`` kept on,
pickled code is refused everywhere unless the user opts in, auto-resume finds the newest intact file."""
import glob
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmeff.datasets import ensure_demo_classification, ensure_demo_coco
from mmeff.engine import UnsafeCheckpointError, checkpoint_loading, newest_intact_checkpoint

from conftest import CLS_DEMO, SMALL, run_tool, train_demo


class Payload:
    """Stands for pickled code: unpickling it creates the file ``sentinel`` (any callable would do)."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return open, (self.sentinel, 'w')


@pytest.fixture
def files(tmp_path):
    weights = {'state_dict': {'w': torch.randn(3)}}
    buffer = HistoryBuffer()
    buffer.update(1.5)
    mmengine_style = dict(weights, meta={'seed': np.int64(3)}, message_hub={'loss': buffer, 'arr': np.ones(2)})
    paths = dict(sentinel=str(tmp_path / 'code_ran'))
    for name, obj in dict(weights=weights, mmengine=mmengine_style,
                          code=dict(weights, meta=Payload(paths['sentinel']))).items():
        paths[name] = str(tmp_path / f'{name}.pth')
        torch.save(obj, paths[name])
    return paths


def test_mmengine_checkpoints_load_with_torchs_defaults(files):
    """Importing mmeff allow-lists mmengine's types: plain ``torch.load`` (weights_only) reads them."""
    ckpt = torch.load(files['mmengine'])
    assert ckpt['message_hub']['loss'].current() == 1.5 and ckpt['meta']['seed'] == 3
    assert torch.equal(torch.load(files['weights'])['state_dict']['w'],
                       torch.load(files['weights'], weights_only=False)['state_dict']['w'])


def test_pickled_code_is_refused_and_does_not_run(files):
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(files['code'])
    with pytest.raises(UnsafeCheckpointError, match=r'trust_checkpoint = True.*--trust-checkpoint'):
        with checkpoint_loading():
            torch.load(files['code'])
    assert not osp.exists(files['sentinel'])  # refused before anything was called
    with checkpoint_loading(trust=True):
        torch.load(files['code'])
    assert osp.exists(files['sentinel'])  # the opt-in really unpickles
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    os.remove(files['sentinel'])
    with pytest.raises(pickle.UnpicklingError):
        torch.load(files['code'])
    assert not osp.exists(files['sentinel'])


def test_detection_apis_load_a_trained_checkpoint(trained_demos, mmdet_scope):
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    config, checkpoint, _ = trained_demos['det']
    image = osp.join(ensure_demo_coco(), 'val', '000001.jpg')
    model = init_detector(config, checkpoint, device='cpu')
    trained = torch.load(checkpoint)['state_dict']
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    assert len(inference_detector(model, image).pred_instances) > 0
    predictions = DetInferencer(model=config, weights=checkpoint, device='cpu',
                                show_progress=False)(image)['predictions']
    assert len(predictions) == 1 and len(predictions[0]['scores']) > 0
    assert model.dataset_meta['classes'] == ('circle', 'square', 'triangle', 'cross')


def test_classification_apis_load_a_trained_checkpoint(trained_demos, mmpretrain_scope):
    from mmengine.runner import load_checkpoint
    from mmpretrain import ImageClassificationInferencer, get_model
    config, checkpoint, _ = trained_demos['cls']
    image = glob.glob(osp.join(ensure_demo_classification(), 'val', 'circle', '*.png'))[0]
    trained = torch.load(checkpoint)['state_dict']
    model = get_model(config, pretrained=checkpoint, device='cpu')
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    result = ImageClassificationInferencer(model=config, pretrained=checkpoint, device='cpu')(image)[0]
    assert result['pred_class'] in ('circle', 'square', 'triangle', 'cross')
    load_checkpoint(get_model(config), checkpoint)  # what `load_from` does


def test_load_from_a_trained_checkpoint(trained_demos, tmp_path):
    _, checkpoint, _ = trained_demos['cls']
    proc = train_demo(CLS_DEMO, tmp_path, 1, '--cfg-options', f'load_from={checkpoint}')
    assert f'Load checkpoint from {checkpoint}' in proc.stdout + proc.stderr


@pytest.fixture
def unsafe_checkpoint(trained_demos, tmp_path):
    """The trained classifier's checkpoint with pickled code in its metadata."""
    ckpt = torch.load(trained_demos['cls'][1])
    ckpt['meta']['payload'] = Payload(tmp_path / 'code_ran')
    path = tmp_path / 'unsafe.pth'
    torch.save(ckpt, path)
    return str(path), tmp_path / 'code_ran'


@pytest.mark.parametrize('use', ['load_from', 'test', 'resume'])
def test_tools_refuse_pickled_code_unless_trusted(unsafe_checkpoint, tmp_path, use):
    """Refused by train (load_from), test and --resume, the payload never runs; the opt-in
    (``--trust-checkpoint``, or ``trust_checkpoint = True`` in the config) loads the file."""
    path, sentinel = unsafe_checkpoint
    if use == 'test':
        command = ['tools/test.py', CLS_DEMO, path, '--work-dir', str(tmp_path / 'run'), '--cfg-options', *SMALL]
    else:
        extra = ['--resume', path] if use == 'resume' else []
        command = ['tools/train.py', CLS_DEMO, '--work-dir', str(tmp_path / 'run'), *extra, '--cfg-options', *SMALL,
                   'train_cfg.max_epochs=2', 'train_cfg.val_interval=2']
        command += [f'load_from={path}'] if use == 'load_from' else []
    refused = run_tool(*command, check=False)
    assert refused.returncode != 0 and 'UnsafeCheckpointError' in refused.stderr
    assert '--trust-checkpoint' in refused.stderr and not sentinel.exists()
    if use == 'load_from':
        trusted = command + ['trust_checkpoint=True']
    else:
        trusted = command[:2] + ['--trust-checkpoint'] + command[2:]
    run_tool(*trusted)
    assert sentinel.exists()


def test_newest_intact_checkpoint(tmp_path):
    def save(name, epoch):
        torch.save(dict(meta=dict(epoch=epoch)), tmp_path / name)

    assert newest_intact_checkpoint(str(tmp_path)) is None
    for epoch in (1, 2, 10):
        save(f'epoch_{epoch}.pth', epoch)
    save('best_accuracy_epoch_11.pth', 11)  # not a periodic checkpoint: never resumed from
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert newest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_10.pth')  # saved after the pointer
    with open(tmp_path / 'epoch_10.pth', 'r+b') as f:
        f.truncate(100)
    (tmp_path / 'last_checkpoint').write_text('')  # killed while the pointer was rewritten
    assert newest_intact_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
