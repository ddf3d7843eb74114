"""Inference paths side by side (mmeff.benchmark.paths, `tools/benchmark.py --backend A B --precision P Q`):
which deploy config runs which path, skips with reasons, the ratios and rates the table reports."""
import csv
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmeff.benchmark.deployed import DEPLOY_CFGS, deploy_config_for
from mmeff.benchmark.paths import BASELINE, compare_paths, expand_paths, peak_of
from mmeff.utils.precision import cpu_supports_bf16

from conftest import REPO

DEMO = osp.join(REPO, 'configs', 'rtdetr', 'rtdetr_r18vd_demo-256.py')
CLASSIFIER_DEMO = osp.join(REPO, 'configs', 'mixing', 'resnet18_demo-64.py')


def test_every_path_has_its_deploy_config():
    for task in ('det', 'cls'):
        for backend, precision in DEPLOY_CFGS:
            path = deploy_config_for(task, backend, precision)
            assert osp.isfile(path), f'{backend} {precision} names {path}, which does not exist'
            cfg = Config.fromfile(path)
            assert cfg.backend_config.type == backend
            assert cfg.codebase_config.type == ('mmdet' if task == 'det' else 'mmpretrain')
    with pytest.raises(ValueError, match=r"onnxruntime has no bf16 path here \(it runs \['fp32'\]\)"):
        deploy_config_for('det', 'onnxruntime', 'bf16')


def test_paths_start_with_the_reference_once():
    assert expand_paths(['pytorch', 'onnxruntime'], ['fp32', 'bf16']) == [
        BASELINE, ('pytorch', 'bf16'), ('onnxruntime', 'fp32'), ('onnxruntime', 'bf16')]
    assert expand_paths(['openvino'], ['int8']) == [BASELINE, ('openvino', 'int8')]


def test_peak_is_the_best_op_at_that_precision():
    peaks = dict(precisions=dict(fp32=dict(gemm=dict(gflops=100.0), conv3x3=dict(gflops=140.0)),
                                 bf16=dict(gemm=dict(gflops=300.0)), int8=dict(gemm='skipped: no VNNI')))
    assert peak_of(peaks, 'fp32') == 140.0 and peak_of(peaks, 'bf16') == 300.0
    assert peak_of(peaks, 'int8') is None and peak_of(None, 'fp32') is None


def test_paths_timed_side_by_side(tmp_path):
    cfg = Config.fromfile(CLASSIFIER_DEMO)
    peaks = dict(precisions=dict(fp32=dict(gemm=dict(gflops=1000.0))))
    result = compare_paths(cfg, expand_paths(['pytorch', 'onnxruntime'], ['fp32', 'fp16']), (64, 64), str(tmp_path),
                           warmup=1, repeats=3, peaks=peaks)
    rows = {(r['backend'], r['precision']): r for r in result['paths']}
    assert list(rows) == [BASELINE, ('pytorch', 'fp16'), ('onnxruntime', 'fp32'), ('onnxruntime', 'fp16')]
    assert 'fp16 runs on CUDA devices only' in rows[('pytorch', 'fp16')]['skipped']  # never timed as fp32
    assert 'onnxruntime has no fp16 path here' in rows[('onnxruntime', 'fp16')]['skipped']
    assert rows[BASELINE]['vs_pytorch_fp32'] == 1.0
    for key in (BASELINE, ('onnxruntime', 'fp32')):
        row = rows[key]
        median = row['latency']['median']
        assert row['fps'] == pytest.approx(1 / median)
        assert row['vs_pytorch_fp32'] == pytest.approx(median / rows[BASELINE]['latency']['median'])
        assert row['gflops_per_s'] == pytest.approx(result['flops'] / median / 1e9)
        assert row['fraction_of_peak'] == pytest.approx(row['gflops_per_s'] / 1000.0)
        assert row['latency']['repeats'] == 3
    assert result['flops'] > 0 and result['task'] == 'cls'


def test_cli_prints_writes_and_plots_the_paths(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', DEMO, '--backend', 'pytorch', 'onnxruntime',
                           '--precision', 'fp32', 'bf16', '--img-size', '128', '--threads', '1', '--warmup', '1',
                           '--repeats', '2', '--out', str(tmp_path / 'p.json'), str(tmp_path / 'p.csv'),
                           '--plot-dir', str(tmp_path / 'plots')], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'vs_pytorch_fp32' in proc.stdout and 'onnxruntime has no bf16 path here' in proc.stdout
    with open(tmp_path / 'p.csv', newline='') as f:
        rows = {(r['backend'], r['precision']): r for r in csv.DictReader(f)}
    assert set(rows) == {BASELINE, ('pytorch', 'bf16'), ('onnxruntime', 'fp32'), ('onnxruntime', 'bf16')}
    assert rows[('onnxruntime', 'fp32')]['latency_ms'] and rows[('onnxruntime', 'fp32')]['device_name']
    bf16 = rows[('pytorch', 'bf16')]
    assert bool(bf16['latency_ms']) == cpu_supports_bf16() and bool(bf16['skipped']) != cpu_supports_bf16()
    result = json.loads((tmp_path / 'p.json').read_text())[0]
    assert result['protocol']['img_size'] == [128, 128] and result['protocol']['threads'] == 1
    assert (tmp_path / 'plots' / 'paths.png').stat().st_size > 1000


def test_cli_reports_a_failed_model_and_exits_1(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', DEMO, '--backend', 'pytorch', '--precision', 'fp32',
                           'bf16', '--img-size', '64', '--warmup', '1', '--repeats', '1'], capture_output=True,
                          text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 1
    assert 'num_queries (100) exceeds the 84 encoder tokens' in proc.stdout  # the row says why
    assert '1 of 1 benchmark runs failed' in proc.stderr


@pytest.mark.slow
def test_cli_evaluates_every_path(trained_rtdetr_demo, tmp_path):
    """``--evaluate``: each path's COCO mAP on the demo val set beside its latency; ONNX Runtime's equals
    PyTorch's (the accuracy gate of tests/test_deploy_eval.py, through the benchmark)."""
    config, checkpoint = trained_rtdetr_demo
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', config, '--backend', 'pytorch', 'onnxruntime',
                           '--img-size', '256', '--threads', '1', '--warmup', '1', '--repeats', '2', '--checkpoint',
                           checkpoint, '--evaluate', '--out', str(tmp_path / 'p.json')], capture_output=True,
                          text=True, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    rows = {(r['backend'], r['precision']): r for r in json.loads((tmp_path / 'p.json').read_text())[0]['paths']}
    pytorch, onnxruntime = rows[BASELINE]['accuracy'], rows[('onnxruntime', 'fp32')]['accuracy']
    print(f'demo mAP: PyTorch fp32 {pytorch}, ONNX Runtime {onnxruntime}')
    assert pytorch > 0.15 and abs(onnxruntime - pytorch) <= 0.005
    assert 'accuracy' in proc.stdout
