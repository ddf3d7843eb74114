"""The accuracy gate (mmeff.deploy.evaluate, tools/test.py --precision / --backend): deployed outputs
turned into mmdet / mmpretrain data samples, reduced precision refused with its reason, and (slow) COCO
mAP / top-1 of each backend and precision beside PyTorch FP32 on the demo models."""
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine import Config

from conftest import CLS_DEMO, REPO, run_tool, skip_for_hardware

pytest.importorskip('mmdeploy', reason='the deploy extra is not installed: pip install -e .[deploy]')
pytest.importorskip('onnxruntime', reason='the deploy extra is not installed')

from mmeff.deploy.backends import BACKENDS, Backend  # noqa: E402
from mmeff.deploy.evaluate import build_deployed_model, evaluate  # noqa: E402
from mmeff.engine import float32_predictions  # noqa: E402
from mmeff.utils.precision import PrecisionUnsupported, check_precision  # noqa: E402

DEPLOY_DIR = osp.join(REPO, 'configs', 'deploy')
RTDETR_DEMO = osp.join(REPO, 'configs', 'rtdetr', 'rtdetr_r18vd_demo-256.py')
# The demo RT-DETR is trained from scratch for the gate: enough epochs for an mAP that can drop.
NO_WORKERS = ['train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
              'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
              'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
# mAP (a fraction) and top-1 (mmpretrain: percent) may move this far from PyTorch FP32 (issue #15).
MARGINS = dict(fp32=0.005, bf16=0.01, int8=0.02)


class CannedBackend(Backend):
    """A backend that returns :attr:`outputs` and records the inputs it was given."""
    name = 'canned'
    outputs = {}
    seen = []

    def run(self, inputs):
        CannedBackend.seen.append(inputs)
        return CannedBackend.outputs


@pytest.fixture
def canned(monkeypatch):
    monkeypatch.setitem(BACKENDS, 'canned', CannedBackend)
    monkeypatch.setattr(CannedBackend, 'seen', [])
    return CannedBackend


def deploy_cfg(name, width, height=None):
    cfg = Config.fromfile(osp.join(DEPLOY_DIR, name))
    cfg.onnx_config.input_shape = [width, height or width]
    return cfg


def detector(canned, dets, labels, graph_hw=(6, 8)):
    canned.outputs = dict(dets=np.asarray(dets, np.float32), labels=np.asarray(labels, np.int64))
    model_cfg = Config(dict(default_scope='mmdet', model=dict(type='RTDETR', data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[0, 0, 0], std=[255, 255, 255], bgr_to_rgb=True))))
    return build_deployed_model(model_cfg, 'canned', deploy_cfg('detection_onnxruntime_static-640x640.py',
                                                                graph_hw[1], graph_hw[0]), 'canned.onnx')


def det_batch(img_hw, ori_hw, scale_factor, num=1):
    from mmdet.structures import DetDataSample
    images = [torch.randint(0, 256, (3, *img_hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(num)]
    samples = [DetDataSample(metainfo=dict(img_shape=img_hw, ori_shape=ori_hw, scale_factor=scale_factor))
               for _ in range(num)]
    return dict(inputs=images, data_samples=samples)


def test_deployed_detector_rescales_dets_to_the_original_image(canned):
    """dets in the 6x8 input's pixels -> boxes in the 12x32 original image's (scale_factor = (w, h)
    input / original = (0.25, 0.5)), scores and labels as given, the zero-score row dropped (mmdeploy's
    conversion), the input normalized by the config's preprocessor (BGR -> RGB, / 255)."""
    dets = [[[2, 1, 6, 5, 0.9], [0, 0, 8, 6, 0.3], [1, 1, 2, 2, 0.0]]]
    model = detector(canned, dets, [[3, 0, 1]])
    batch = det_batch((6, 8), (12, 32), (0.25, 0.5))
    [sample] = model.test_step(batch)
    pred = sample.pred_instances
    torch.testing.assert_close(pred.bboxes, torch.tensor([[8., 2., 24., 10.], [0., 0., 32., 12.]]))
    torch.testing.assert_close(pred.scores, torch.tensor([0.9, 0.3]))
    assert pred.labels.tolist() == [3, 0]
    [seen] = canned.seen
    expected = batch['inputs'][0].flip(0).float().div(255)[None].numpy()
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_deployed_detector_refuses_inputs_that_do_not_fit_the_graph(canned):
    model = detector(canned, np.zeros((1, 1, 5)), np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r'give 8x8 \(HxW\) inputs; the graph takes 6x8.*input_shape=\[8, 8\]'):
        model.test_step(det_batch((8, 8), (8, 8), (1.0, 1.0)))
    with pytest.raises(ValueError, match='a batch of 2 images for a static graph of batch 1'):
        model.test_step(det_batch((6, 8), (6, 8), (1.0, 1.0), num=2))


def test_deployed_classifier_sets_scores_and_labels(canned):
    from mmpretrain.structures import DataSample
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], np.float32)
    canned.outputs = dict(output=probs)
    model_cfg = Config(dict(default_scope='mmpretrain', model=dict(
        type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=512)),
        data_preprocessor=dict(mean=[10, 10, 10], std=[2, 2, 2])))
    dynamic = deploy_cfg('classification_onnxruntime_static-224x224.py', 4)
    dynamic.onnx_config.dynamic_axes = dict(input={0: 'batch'}, output={0: 'batch'})
    model = build_deployed_model(model_cfg, 'canned', dynamic, 'canned.onnx')
    images = [torch.full((3, 4, 4), 14, dtype=torch.uint8) for _ in range(2)]
    samples = model.test_step(dict(inputs=images, data_samples=[DataSample(), DataSample()]))
    torch.testing.assert_close(torch.stack([s.pred_score for s in samples]), torch.from_numpy(probs))
    assert [s.pred_label.item() for s in samples] == [1, 0]
    # the config's top-level data_preprocessor, as mmengine's runner gives it to the PyTorch model
    np.testing.assert_allclose(canned.seen[0], np.full((2, 3, 4, 4), 2.0))


def test_float32_predictions_casts_floats_only():
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    sample = DetDataSample(pred_instances=InstanceData(bboxes=torch.ones(2, 4, dtype=torch.bfloat16),
                                                       scores=torch.ones(2, dtype=torch.float16),
                                                       labels=torch.tensor([1, 2])))
    pred = float32_predictions(sample).pred_instances
    assert (pred.bboxes.dtype, pred.scores.dtype, pred.labels.dtype) == (torch.float32, torch.float32, torch.int64)


def test_fp16_on_a_cpu_is_refused_before_anything_is_built(tmp_path):
    if torch.cuda.is_available():
        skip_for_hardware('fp16 runs on this machine\'s GPU')
    work_dir = tmp_path / 'work'
    proc = run_tool('tools/test.py', RTDETR_DEMO, str(tmp_path / 'absent.pth'), '--precision', 'fp16',
                    '--work-dir', str(work_dir), check=False, timeout=300)
    assert proc.returncode != 0
    assert 'PrecisionUnsupported: fp16 runs on CUDA devices only' in proc.stderr, proc.stderr[-2000:]
    assert not work_dir.exists()  # no runner, no dataset, no checkpoint read


def test_a_backend_precision_is_its_deploy_config(tmp_path):
    proc = run_tool('tools/test.py', RTDETR_DEMO, 'absent.pth', '--backend', 'onnxruntime', '--deploy-cfg',
                    osp.join(DEPLOY_DIR, 'detection_onnxruntime_static-640x640.py'), '--precision', 'bf16',
                    check=False, timeout=300)
    assert proc.returncode == 2 and 'runs at its deploy config\'s precision' in proc.stderr


# --- the gate (slow): the demo models trained, then evaluated by each backend and precision ---

def metrics_of(stdout: str) -> dict:
    """The metrics of the ``Epoch(test)`` line mmengine logs at the end of ``tools/test.py``."""
    [line] = [line for line in stdout.splitlines() if 'Epoch(test)' in line and ' - INFO - ' in line][-1:]
    return {key: float(value) for key, value in re.findall(r'(\S+/\S+): (-?[\d.]+)', line)}


@pytest.fixture(scope='module')
def cls_demo(tmp_path_factory):
    """``(config, checkpoint)`` of the demo classifier trained on its own schedule (conftest's one-epoch
    ``trained_demos`` classifier is at chance, where bf16 rounding flips near-tied arg-maxes);
    ``MMEFF_DEMO_CLS_CHECKPOINT`` reuses one."""
    checkpoint = os.environ.get('MMEFF_DEMO_CLS_CHECKPOINT')
    if checkpoint:
        return CLS_DEMO, checkpoint
    work_dir = tmp_path_factory.mktemp('cls_demo')
    run_tool('tools/train.py', CLS_DEMO, '--work-dir', str(work_dir), '--cfg-options', *NO_WORKERS, 'randomness.seed=0',
             timeout=3600)
    epochs = Config.fromfile(osp.join(REPO, CLS_DEMO)).train_cfg.max_epochs
    return CLS_DEMO, str(work_dir / f'epoch_{epochs}.pth')


@pytest.fixture(scope='module')
def rtdetr_fp32(trained_rtdetr_demo, tmp_path_factory):
    config, checkpoint = trained_rtdetr_demo
    metrics = evaluate(config, checkpoint, work_dir=str(tmp_path_factory.mktemp('pytorch_fp32')),
                       cfg_options=dict(test_dataloader=dict(num_workers=0, persistent_workers=False)))
    print('RT-DETR demo, PyTorch FP32:', metrics)
    assert metrics['coco/bbox_mAP'] >= 0.15, 'the demo model learned too little for a gate on its mAP'
    return metrics['coco/bbox_mAP']


def gate_deploy_cfg(name, size, model_cfg, tmp_path):
    """The deploy config ``name`` at the demo's input ``size``, written to ``tmp_path``; INT8 calibrates
    on 64 images of the demo's train split (the gate evaluates on its val split)."""
    cfg = deploy_cfg(name, size)
    if cfg.backend_config.get('precision') == 'int8':
        train_set = Config.fromfile(model_cfg).train_dataloader.dataset
        cfg.backend_config.calibration.update(
            dataset=dict(type=train_set.type, split='train', test_mode=True), num_images=64)
    try:
        BACKENDS[cfg.backend_config.type].require('cpu', cfg)
    except PrecisionUnsupported as reason:
        skip_for_hardware(str(reason))
    cfg.dump(str(tmp_path / name))
    return cfg.backend_config.type, str(tmp_path / name)


def gate_cli(config, checkpoint, work_dir, *args):
    proc = run_tool('tools/test.py', config, checkpoint, '--work-dir', str(work_dir), *args,
                    '--cfg-options', *NO_WORKERS[4:], timeout=3600)
    return metrics_of(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize('deploy_name,margin', [
    ('detection_onnxruntime_static-640x640.py', MARGINS['fp32']),
    ('detection_openvino_static-640x640.py', MARGINS['fp32']),
    ('detection_openvino-bf16_static-640x640.py', MARGINS['bf16']),
    ('detection_openvino-int8_static-640x640.py', MARGINS['int8']),
])
def test_deployed_detector_map_gate(trained_rtdetr_demo, rtdetr_fp32, deploy_name, margin, tmp_path):
    """COCO mAP on the demo val set of the demo RT-DETR deployed (exported at its 256x256 input), within
    ``margin`` of PyTorch FP32."""
    backend, deploy_file = gate_deploy_cfg(deploy_name, 256, trained_rtdetr_demo[0], tmp_path)
    metrics = gate_cli(*trained_rtdetr_demo, tmp_path / 'work', '--backend', backend, '--deploy-cfg', deploy_file)
    print(f'RT-DETR demo, {deploy_name}: mAP {metrics["coco/bbox_mAP"]} (PyTorch FP32 {rtdetr_fp32})')
    # the gate bounds what the path costs; on 60 images a reduced precision may also land a little above
    assert rtdetr_fp32 - metrics['coco/bbox_mAP'] <= margin


@pytest.mark.slow
def test_pytorch_bf16_map_gate(trained_rtdetr_demo, rtdetr_fp32, tmp_path):
    try:
        check_precision('bf16', 'cpu')
    except PrecisionUnsupported as reason:
        skip_for_hardware(str(reason))
    metrics = gate_cli(*trained_rtdetr_demo, tmp_path / 'work', '--precision', 'bf16')
    print(f'RT-DETR demo, PyTorch bf16: mAP {metrics["coco/bbox_mAP"]} (PyTorch FP32 {rtdetr_fp32})')
    assert rtdetr_fp32 - metrics['coco/bbox_mAP'] <= MARGINS['bf16']


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['onnxruntime', 'openvino', 'openvino-bf16', 'openvino-int8', 'pytorch-bf16'])
def test_classifier_top1_gate(cls_demo, variant, tmp_path):
    """Top-1 (percent) of the demo classifier on the demo val set, deployed or at bf16, within the
    margins (as fractions) of PyTorch FP32."""
    config, checkpoint = cls_demo
    no_workers = dict(test_dataloader=dict(num_workers=0, persistent_workers=False))
    reference = evaluate(config, checkpoint, work_dir=str(tmp_path / 'fp32'), cfg_options=no_workers)['accuracy/top1']
    backend, _, precision = variant.partition('-')
    precision = precision or 'fp32'
    if backend == 'pytorch':
        try:
            check_precision(precision, 'cpu')
        except PrecisionUnsupported as reason:
            skip_for_hardware(str(reason))
        metrics = gate_cli(config, checkpoint, tmp_path / 'work', '--precision', precision)
    else:
        name = f'classification_{variant}_static-224x224.py'
        backend, deploy_file = gate_deploy_cfg(name, 64, config, tmp_path)  # the demo images are 64x64
        metrics = gate_cli(config, checkpoint, tmp_path / 'work', '--backend', backend, '--deploy-cfg', deploy_file)
    print(f'classifier demo, {variant}: top-1 {metrics["accuracy/top1"]} (PyTorch FP32 {reference})')
    assert reference - metrics['accuracy/top1'] <= 100 * MARGINS[precision]  # what the path costs
