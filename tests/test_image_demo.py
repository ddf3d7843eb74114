"""demo/image_demo.py as a user runs it, on the bundled demo images: the RT-DETR demo detector and the
ResNet-18 demo classifier with random weights (enough to check what is drawn and saved)."""
import importlib.util
import json
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmeff  # noqa: F401  (registers mmeff's modules)
from mmeff.benchmark.subject import build_model
from mmeff.datasets.demo import SHAPES, ensure_demo_classification, ensure_demo_coco
from mmeff.utils import precision

from conftest import CLS_DEMO, REPO, run_tool

DEMO = 'demo/image_demo.py'
RTDETR_DEMO = 'configs/rtdetr/rtdetr_r18vd_demo-256.py'


class Payload:
    """Stands for pickled code: unpickling it creates the file ``sentinel``."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return open, (self.sentinel, 'w')


def _random_checkpoint(config, path, **meta):
    """The config's model with random weights, saved as the runner saves it (dataset_meta in meta)."""
    state_dict = build_model(Config.fromfile(osp.join(REPO, config))).state_dict()
    torch.save(dict(meta=dict(dataset_meta=dict(classes=SHAPES), **meta), state_dict=state_dict), path)
    return str(path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('demo_checkpoints')
    return dict(det=_random_checkpoint(RTDETR_DEMO, folder / 'det.pth'),
                cls=_random_checkpoint(CLS_DEMO, folder / 'cls.pth'))


@pytest.fixture(scope='module')
def demo():
    """demo/image_demo.py as a module, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location('image_demo', osp.join(REPO, DEMO))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cls_image():
    return osp.join(ensure_demo_classification(), 'val', 'circle', '00000.png')


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_detector_draws_boxes_on_every_image_of_a_folder(checkpoints, tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('000001.jpg', '000002.jpg'):
        shutil.copy(osp.join(ensure_demo_coco(), 'val', name), images / name)
    (images / 'notes.txt').write_text('not an image')  # skipped
    out = tmp_path / 'out'
    proc = run_tool(DEMO, str(images), RTDETR_DEMO, '--weights', checkpoints['det'], '--out-dir', str(out),
                    '--score-thr', '0', '--device', 'cpu')
    assert str(out / 'vis') in proc.stdout and str(out / 'preds') in proc.stdout
    for name in ('000001.jpg', '000002.jpg'):
        image, drawn = cv2.imread(str(images / name)), cv2.imread(str(out / 'vis' / name))
        assert drawn is not None and drawn.shape == image.shape
        assert (np.abs(drawn.astype(int) - image).max(axis=2) > 64).mean() > 0.01  # boxes, not JPEG noise
        preds = _json(out / 'preds' / f'{name[:-4]}.json')
        assert preds.keys() >= {'labels', 'scores', 'bboxes'}
        assert len(preds['labels']) == len(preds['scores']) == len(preds['bboxes']) == 100  # test_cfg.max_per_img
        assert all(0 <= label < len(SHAPES) for label in preds['labels']) and len(preds['bboxes'][0]) == 4
    assert sorted(p.name for p in (out / 'vis').iterdir()) == ['000001.jpg', '000002.jpg']


def _check_classification(out, image, topk):
    drawn = cv2.imread(str(out / 'vis' / (osp.splitext(osp.basename(image))[0] + '.png')))
    assert drawn is not None and drawn.shape == cv2.imread(image).shape
    preds = _json(out / 'preds' / (osp.splitext(osp.basename(image))[0] + '.json'))
    assert preds.keys() == {'pred_label', 'pred_score', 'pred_class', 'topk'}
    top = preds['topk']
    assert len(top['labels']) == len(top['scores']) == len(top['classes']) == topk
    assert top['labels'][0] == preds['pred_label'] and top['scores'][0] == pytest.approx(preds['pred_score'])
    assert top['scores'] == sorted(top['scores'], reverse=True)
    assert [SHAPES[label] for label in top['labels']] == top['classes'] and preds['pred_class'] == top['classes'][0]


def test_classifier_draws_and_saves_its_top_k(checkpoints, tmp_path):
    out = tmp_path / 'out'
    run_tool(DEMO, _cls_image(), CLS_DEMO, '--weights', checkpoints['cls'], '--out-dir', str(out), '--topk', '3',
             '--device', 'cpu')
    _check_classification(out, _cls_image(), 3)


def test_bf16_runs_or_is_refused_with_the_reason(checkpoints, tmp_path, demo, monkeypatch, capsys):
    """The classifier at bf16 where the CPU has bf16 kernels; on one without them (faked) the reason."""
    out = tmp_path / 'out'
    argv = [_cls_image(), osp.join(REPO, CLS_DEMO), '--weights', checkpoints['cls'], '--out-dir', str(out),
            '--topk', '2', '--device', 'cpu', '--precision', 'bf16']
    if precision.cpu_supports_bf16():
        run_tool(DEMO, *argv)
        _check_classification(out, _cls_image(), 2)
    monkeypatch.setattr(precision, 'cpu_supports_bf16', lambda: False)
    with pytest.raises(SystemExit, match='--precision bf16: this CPU has no bf16 kernels'):
        demo.main(argv + ['--out-dir', str(tmp_path / 'refused')])
    assert not (tmp_path / 'refused').exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    missing = tmp_path / 'missing.pth'
    proc = run_tool(DEMO, _cls_image(), CLS_DEMO, '--weights', str(missing), check=False)
    assert proc.returncode != 0 and f'checkpoint not found: {missing}' in proc.stderr
    assert 'tools/train.py writes' in proc.stderr


@pytest.mark.parametrize('problem', ['input', 'config', 'empty folder'])
def test_missing_input_or_config_is_a_clear_error(demo, tmp_path, capsys, problem):
    argv = dict(input=[str(tmp_path / 'nope.jpg'), CLS_DEMO], config=[_cls_image(), str(tmp_path / 'nope.py')],
                **{'empty folder': [str(tmp_path), CLS_DEMO]})[problem]
    with pytest.raises(SystemExit) as exit_:
        demo.main(argv)
    message = dict(input=f'input not found: {tmp_path / "nope.jpg"}', config=f'config not found: {tmp_path}/nope.py',
                   **{'empty folder': f'no images in {tmp_path}'})[problem]
    assert exit_.value.code != 0 and message in capsys.readouterr().err


def test_file_list_input(demo, tmp_path):
    """A .txt list: one image a line, relative to the list's folder or absolute; blank lines skipped."""
    (tmp_path / 'a.png').touch()
    listing = tmp_path / 'images.txt'
    listing.write_text(f'a.png\n\n{_cls_image()}\n')
    assert demo.list_images(str(listing)) == [str(tmp_path / 'a.png'), _cls_image()]


def test_pickled_code_is_refused_unless_trusted(tmp_path, demo):
    sentinel = tmp_path / 'code_ran'
    unsafe = _random_checkpoint(CLS_DEMO, tmp_path / 'unsafe.pth', payload=Payload(sentinel))
    argv = [_cls_image(), osp.join(REPO, CLS_DEMO), '--weights', unsafe, '--out-dir', str(tmp_path / 'out'),
            '--device', 'cpu', '--no-save-vis']
    with pytest.raises(SystemExit, match='refused to load a checkpoint(.|\n)*--trust-checkpoint'):
        demo.main(argv)
    assert not sentinel.exists()
    demo.main(argv + ['--trust-checkpoint'])
    assert sentinel.exists() and (tmp_path / 'out' / 'preds' / '00000.json').exists()
    assert not (tmp_path / 'out' / 'vis').exists()  # --no-save-vis
