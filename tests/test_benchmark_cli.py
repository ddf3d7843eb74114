"""tools/benchmark.py on tiny configs: JSON, CSV, Pareto plots; failures reported; end-to-end latency."""
import csv
import json
import math
import os.path as osp
import subprocess
import sys

import pytest

from mmeff.benchmark import Subject
from mmeff.benchmark.end2end import detection_end2end, plot_end2end
from mmeff.benchmark.memory import measure_in_subprocess

from conftest import skip_for_hardware

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

TINY_CLASSIFIER = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=4, in_channels=64, loss=dict(type='CrossEntropyLoss')))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
"""

TINY_DETECTOR = """
default_scope = 'mmdet'
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[255, 255, 255]),
    backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3)),
    neck=dict(type='FPN', in_channels=[16, 32, 64], out_channels=16, num_outs=3),
    bbox_head=dict(
        type='RetinaHead', num_classes=4, in_channels=16, stacked_convs=1, feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                              ratios=[1.0], strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
test_dataloader = dict(dataset=dict(
    type='DemoCocoDataset', split='val', test_mode=True,
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=False),
              dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                    'scale_factor'))]))
"""


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp('configs')
    paths = {}
    for name, text in dict(tiny_cls=TINY_CLASSIFIER, tiny_det=TINY_DETECTOR,
                           broken="default_scope = 'mmdet'\nmodel = dict(type='NoSuchDetector')\n").items():
        paths[name] = str(root / f'{name}.py')
        with open(paths[name], 'w') as f:
            f.write(text)
    return paths


def run_cli(*args):
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_cli_writes_json_csv_and_pareto_plots(configs, tmp_path):
    accuracy = tmp_path / 'accuracy.csv'
    accuracy.write_text('config,accuracy\ntiny_cls,90.0\nconfigs/tiny_det.py,50.0\n')
    proc = run_cli(configs['tiny_cls'], configs['broken'], configs['tiny_det'], '--img-size', '32',
                   '--metrics', 'params', 'flops', 'latency', 'throughput', 'train', '--batch-sizes', '1', '2',
                   '--warmup', '1', '--repeats', '2', '--train-batch-size', '2', '--dataset-size', '7',
                   '--out', str(tmp_path / 'r.json'), str(tmp_path / 'r.csv'), '--accuracy', str(accuracy),
                   '--plot-dir', str(tmp_path / 'plots'), '--keep-going')
    assert proc.returncode == 0, proc.stderr  # a failed model, but --keep-going
    assert 'tiny_cls' in proc.stdout and 'tiny_det' in proc.stdout

    results = {r['name']: r for r in json.loads((tmp_path / 'r.json').read_text())}
    # the broken config is reported with its reason; the others still ran
    assert 'NoSuchDetector' in results['broken']['errors']['build']
    for name in ('tiny_cls', 'tiny_det'):
        result = results[name]
        assert result['errors'] == {}
        model = Subject(configs[name], (32, )).model
        assert result['params']['total'] == sum(p.numel() for p in model.parameters())
        assert result['flops']['flops'] == 2 * result['flops']['macs'] > 0
        assert result['latency']['repeats'] == 2 and result['latency']['batch_size'] == 1
        assert set(result['throughput']['per_batch_size']) == {'1', '2'}
        assert result['throughput']['batch_size'] in (1, 2)
        # 7 images at batch 2: 4 steps, the last one partial
        assert result['train']['epoch_s'] == pytest.approx(4 * result['train']['median'])
        assert result['protocol']['img_size'] == [32, 32]
        assert result['protocol']['threads'] >= 1 and result['protocol']['dtype'] == 'float32'
    assert results['tiny_cls']['accuracy'] == 90.0

    with open(tmp_path / 'r.csv', newline='') as f:
        rows = {row['name']: row for row in csv.DictReader(f)}
    assert set(rows) == {'tiny_cls', 'tiny_det', 'broken'}
    assert float(rows['tiny_cls']['GMACs']) == pytest.approx(results['tiny_cls']['flops']['macs'] / 1e9)
    assert rows['tiny_det']['device_name']

    # the classifier is smaller and more accurate: alone on the parameter front
    with open(tmp_path / 'plots' / 'pareto.csv', newline='') as f:
        front = {(r['metric'], r['name']): r['pareto_optimal'] for r in csv.DictReader(f)}
    assert front[('params_M', 'tiny_cls')] == 'True' and front[('params_M', 'tiny_det')] == 'False'
    for metric in ('params_M', 'GFLOPs', 'latency_ms', 'throughput_img_s', 'train_step_ms', 'epoch_min'):
        assert (tmp_path / 'plots' / f'pareto_{metric}.png').stat().st_size > 1000
    correlation = json.loads((tmp_path / 'plots' / 'correlations.json').read_text())
    assert correlation['pearson']['GMACs']['GFLOPs'] == pytest.approx(1.0) or math.isnan(
        correlation['pearson']['GMACs']['GFLOPs'])  # two models: fewer than 3 points give NaN


def test_cli_exits_non_zero_when_a_model_fails(configs, tmp_path):
    proc = run_cli(configs['tiny_cls'], configs['broken'], '--metrics', 'params', '--out', str(tmp_path / 'r.json'))
    assert proc.returncode == 1
    assert '1 of 2 benchmark runs failed' in proc.stderr and 'broken failed: build:' in proc.stderr
    assert 'NoSuchDetector' in proc.stderr and 'tiny_cls' in proc.stdout  # reported, and the others still ran
    assert {r['name'] for r in json.loads((tmp_path / 'r.json').read_text())} == {'tiny_cls', 'broken'}


def test_cli_refuses_unavailable_backend(configs):
    try:
        import tensorrt  # noqa: F401
        skip_for_hardware('TensorRT is installed, so the refusal cannot be seen')
    except ImportError:
        pass
    proc = run_cli(configs['tiny_cls'], '--backend', 'tensorrt')
    assert proc.returncode != 0
    assert 'TensorRT is not installed' in proc.stderr and 'NVIDIA GPU' in proc.stderr


def test_cli_onnxruntime_backend_beside_pytorch(configs, tmp_path):
    pytest.importorskip('onnxruntime', reason='the deploy extra is not installed')
    out = tmp_path / 'ort.json'
    proc = run_cli(configs['tiny_cls'], configs['tiny_det'], '--backend', 'onnxruntime', '--img-size', '64',
                   '--batch-sizes', '1', '2', '--warmup', '1', '--repeats', '2', '--out', str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    for result in results:
        assert not result['errors'], result['errors']
        assert 'train' not in result and 'memory' not in result  # inference only, said in the log
        latency = result['latency']
        assert latency['ratio'] == pytest.approx(latency['median'] / latency['pytorch']['median'])
        assert result['protocol']['backend'] == 'onnxruntime'
        assert result['protocol']['deploy_cfg'].endswith('onnxruntime_static-640x640.py' if result['task'] == 'det'
                                                         else 'onnxruntime_static-224x224.py')
    assert set(results[0]['throughput']['per_batch_size']) == {'1', '2'}
    assert 'measures inference only' in proc.stderr and 'latency_vs_pytorch' in proc.stdout


def test_end2end_detection_latency(configs, tmp_path):
    result = detection_end2end(configs['tiny_det'], num_images=2, warmup=1, score_thrs=[0.0, 0.5],
                               iou_thrs=[0.5, 0.7])
    assert 'error' not in result, result
    assert result['images'] == 2 and result['has_nms'] and result['input_shape'] == [64, 64]
    assert [(p['score_thr'], p['iou_thr']) for p in result['post']] == [(0.0, 0.5), (0.0, 0.7), (0.5, 0.5),
                                                                       (0.5, 0.7)]
    no_threshold, strict = result['post'][0], result['post'][2]
    # 64x64 input, one anchor per position at strides 8/16/32: 64 + 16 + 4 = 84 boxes x 4 classes, all
    # above a score threshold of 0 (nms_pre=1000 keeps them all)
    assert no_threshold['boxes_before_nms'] == 84 * 4
    assert strict['boxes_before_nms'] <= no_threshold['boxes_before_nms']
    assert all(p['boxes_kept'] <= p['boxes_before_nms'] and p['post_ms'] >= p['nms_ms'] for p in result['post'])

    # plots: NMS vs. thresholds for the NMS detector; latency (and accuracy) vs. a swept setting
    runs = [dict(name='tiny_det', end2end=result)] + [
        dict(name=f'tiny_det@score_thr={t}', end2end=result, accuracy=a) for t, a in ((0.1, 40.0), (0.3, 38.0))]
    paths = plot_end2end(runs, str(tmp_path))
    assert sorted(osp.basename(p) for p in paths) == [
        'end2end_sweep_tiny_det.png', 'nms_vs_thresholds_tiny_det.png', 'nms_vs_thresholds_tiny_det@score_thr=0.1.png',
        'nms_vs_thresholds_tiny_det@score_thr=0.3.png']
    assert all(osp.getsize(p) > 1000 for p in paths)


def test_end2end_reports_unsupported_models(configs):
    assert 'is for detectors' in detection_end2end(configs['tiny_cls'])['error']


@pytest.mark.slow
def test_peak_memory_in_fresh_processes(configs):
    infer = measure_in_subprocess(configs['tiny_cls'], 'infer', (32, 32), 1, 'cpu')
    train = measure_in_subprocess(configs['tiny_cls'], 'train', (32, 32), 2, 'cpu')
    assert infer['method'] == 'peak RSS growth' and infer['peak_reset']
    assert 0 < infer['peak_mib'] and 0 < train['peak_mib']
    with pytest.raises(RuntimeError, match='memory measurement failed'):
        measure_in_subprocess(configs['broken'], 'infer', (32, 32), 1, 'cpu')
