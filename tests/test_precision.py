"""Reduced precision in PyTorch: ``tools/train.py --amp`` trains in bf16 on a CPU with bf16 kernels (and is
refused before anything is built on one without), the RT-DETR decoder clamps to fp16's range only where it
computes in fp16, and ``tools/analysis/cpu_peak_throughput.py`` reports a peak per precision."""
import importlib.util
import json
import os.path as osp
import sys

import pytest
import torch

import mmeff  # noqa: F401  (registers the modules)
from mmeff.benchmark.paths import peak_of
from mmeff.engine import CPUAmpOptimWrapper, amp_optim_wrapper
from mmeff.models.layers import rtdetr_decoder
from mmeff.models.layers.rtdetr_decoder import FP16_MAX, RTDETRDecoderLayer, clamp_to_fp16_range
from mmeff.utils import precision
from mmeff.utils.precision import PrecisionUnsupported, check_precision

from conftest import CLS_DEMO, REPO, SMALL, run_tool, skip_for_hardware

DET_DEMO = 'configs/rtdetr/rtdetr_r18vd_demo-256.py'
PROBE = ("custom_imports = dict(imports=['mmeff', 'helpers.dtype_probe'], allow_failed_imports=False)\n"
         "custom_hooks = [dict(type='DtypeProbeHook')]\n")
# RT-DETR's demo on the same 4 images every iteration, at a constant learning rate (no warm-up, no
# augmentation): its loss falls within a few iterations.
DET_BODY = PROBE + """model = dict(data_preprocessor=dict(batch_augments=None))
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 256), keep_ratio=False), dict(type='PackDetInputs')]))
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
"""


def require_cpu_bf16():
    try:
        check_precision('bf16', 'cpu')
    except PrecisionUnsupported as error:
        skip_for_hardware(str(error))


@pytest.mark.parametrize('config, body, images', [
    (DET_DEMO, DET_BODY, 4),
    pytest.param(CLS_DEMO, PROBE, 16, marks=pytest.mark.slow),  # the same path in the other scope
], ids=['rtdetr', 'classifier'])
def test_amp_trains_in_bf16_on_the_cpu(tmp_path, config, body, images):
    """A few iterations of ``--amp`` on the CPU: convolutions and linear layers output bf16, the loss is
    finite and falls, the checkpoint holds fp32 weights."""
    require_cpu_bf16()
    derived = tmp_path / 'amp_config.py'
    derived.write_text(f'_base_ = [{osp.join(REPO, config)!r}]\n{body}')
    epochs = 4  # one iteration each
    proc = run_tool('tools/train.py', str(derived), '--amp', '--work-dir', str(tmp_path), '--cfg-options', *SMALL,
                    f'train_dataloader.dataset.indices={images}', f'train_dataloader.batch_size={images}',
                    f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs + 1}',
                    f'default_hooks.checkpoint.interval={epochs}', env=dict(OMP_NUM_THREADS='1'))
    assert "type='CPUAmpOptimWrapper'" in proc.stdout + proc.stderr
    probe = json.loads((tmp_path / 'dtype_probe.json').read_text())
    print(probe)
    # every convolution runs in bf16; linear layers too, except RT-DETR's prediction branches inside its loss,
    # which runs in fp32 as the official code's (matching costs and losses unrounded)
    assert probe['dtypes']['Conv2d'] == ['torch.bfloat16']
    assert probe['dtypes']['Linear'] == (['torch.bfloat16', 'torch.float32'] if config == DET_DEMO
                                         else ['torch.bfloat16'])
    if config == DET_DEMO:
        assert probe['loss_dtypes'] == ['torch.float32']
    losses = probe['losses']
    assert len(losses) == epochs and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    state = torch.load(tmp_path / f'epoch_{epochs}.pth', map_location='cpu', weights_only=False)['state_dict']
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}


def _tool(path):
    """A script of tools/ imported as a module (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0], osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_amp_is_refused_before_anything_is_built_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, 'cpu_supports_bf16', lambda: False)
    train = _tool('tools/train.py')

    def build_runner(cfg):
        raise AssertionError('the runner (model, data) was built before --amp was refused')

    monkeypatch.setattr(train, 'build_runner', build_runner)
    monkeypatch.setattr(train, 'get_device', lambda: 'cpu')
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', osp.join(REPO, CLS_DEMO), '--amp'])
    with pytest.raises(PrecisionUnsupported) as error:
        train.main()
    message = str(error.value)
    assert 'bf16' in message and 'AVX512-BF16 or AMX-BF16' in message and 'without --amp' in message
    with pytest.raises(PrecisionUnsupported, match='without --amp'):  # a config that names it directly
        CPUAmpOptimWrapper(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))


def test_amp_optim_wrapper_per_device():
    wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1), clip_grad=dict(max_norm=0.1))
    assert amp_optim_wrapper(wrapper, 'cuda') == {**wrapper, 'type': 'AmpOptimWrapper', 'loss_scale': 'dynamic'}
    assert amp_optim_wrapper({**wrapper, 'loss_scale': 512.0}, 'cuda')['loss_scale'] == 512.0
    require_cpu_bf16()
    assert amp_optim_wrapper(wrapper, 'cpu') == {**wrapper, 'type': 'CPUAmpOptimWrapper'}


def _overflowing_layer():
    """A decoder layer whose FFN output overflows fp16 (|x| > 65504) on any input."""
    torch.manual_seed(0)
    layer = RTDETRDecoderLayer(embed_dims=32, num_heads=4, feedforward_channels=64).eval()
    with torch.no_grad():
        layer.linear1.bias.fill_(1.0)
        layer.linear2.weight.fill_(3e3)
    shapes = [(8, 8), (4, 4), (2, 2)]
    inputs = (torch.randn(1, 5, 32), torch.randn(1, 5, 32), torch.rand(1, 5, 4) * 0.5 + 0.25,
              torch.randn(1, sum(h * w for h, w in shapes), 32), shapes)
    return layer, inputs


@pytest.mark.parametrize('mode', ['half', 'fp16 autocast'])
def test_decoder_clamps_to_fp16_range_in_fp16(monkeypatch, mode):
    """As the official decoder: an FFN output past fp16's range leaves the layer finite, in a half model
    and under fp16 autocast; without the clamp the same layer gives NaN."""
    layer, inputs = _overflowing_layer()

    def run():
        with torch.no_grad():
            if mode == 'half':
                return layer.half()(*[x.half() if torch.is_tensor(x) else x for x in inputs])
            with torch.autocast('cpu', dtype=torch.float16):
                return layer(*inputs)

    assert torch.isfinite(run()).all()
    layer.float()
    monkeypatch.setattr(rtdetr_decoder, 'clamp_to_fp16_range', lambda x: x)
    assert torch.isnan(run()).any()


def test_clamp_is_a_no_op_outside_fp16():
    """fp32 and bf16 (fp32's range) are returned untouched: the fp32 outputs stay bitwise identical."""
    x = torch.tensor([-1e6, 0.5, 1e6])
    assert clamp_to_fp16_range(x) is x
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert clamp_to_fp16_range(x) is x
    assert clamp_to_fp16_range(x.bfloat16()).max() > FP16_MAX
    assert clamp_to_fp16_range(x.half()).tolist() == [-65504, 0.5, 65504]


@pytest.mark.slow
def test_cpu_peaks_per_precision(tmp_path):
    """bf16 and int8 peaks in the JSON the benchmark reads (fp32's: tests/test_deploy.py); bf16 is skipped
    with the reason on a CPU without bf16 kernels, never timed in fp32."""
    out = tmp_path / 'peak.json'
    run_tool('tools/analysis/cpu_peak_throughput.py', '--threads', '1', '--warmup', '0', '--repeats', '1',
             '--precisions', 'bf16', 'int8', '--out', str(out))
    peaks = json.loads(out.read_text())
    expected = dict(bf16={'pytorch', 'openvino'}, int8={'openvino'})
    assert set(peaks['precisions']) == set(expected)
    for name, entries in peaks['precisions'].items():
        assert len(entries) == 3 * len(expected[name])
        assert {entry['runtime'] for entry in entries.values()} == expected[name]
    int8 = peaks['precisions']['int8'].values()
    assert all(entry['gflops'] > 0 for entry in int8), int8
    assert peak_of(peaks, 'int8') == max(entry['gflops'] for entry in peaks['precisions']['int8'].values())
    bf16 = peaks['precisions']['bf16'].values()
    try:
        check_precision('bf16', 'cpu')
    except PrecisionUnsupported as error:
        assert all(str(error) == entry['skipped'] for entry in bf16 if entry['runtime'] == 'pytorch')
    else:
        assert all(entry['gflops'] > 0 for entry in bf16), bf16


def test_cpu_peak_runs_each_precision(tmp_path):
    """Every runtime of every precision runs a small convolution (int8: quantized by NNCF, run in 8 bits)."""
    peak = _tool('tools/analysis/cpu_peak_throughput.py')
    require_cpu_bf16()
    calls = peak.op_calls(list(peak.RUNTIMES), (1, 8, 8, 8), 8, 3, 1, str(tmp_path))
    assert list(calls) == [f'{p}/{r}' for p, runtimes in peak.RUNTIMES.items() for r in runtimes]
    for path, call in calls.items():
        assert callable(call), (path, call)
        call()


def test_cpu_peak_skips_what_the_cpu_does_not_run(monkeypatch, tmp_path):
    """PyTorch bf16 without bf16 kernels, and an OpenVINO convolution that runs at another precision than
    asked (OpenVINO's silent fallback), are skipped with the reason."""
    peak = _tool('tools/analysis/cpu_peak_throughput.py')
    monkeypatch.setattr(precision, 'cpu_supports_bf16', lambda: False)
    monkeypatch.setattr(peak, 'convolution_precision', lambda compiled: 'f32')
    calls = peak.op_calls(['fp32', 'bf16'], (1, 8, 8, 8), 8, 3, 1, str(tmp_path))
    assert 'AVX512-BF16 or AMX-BF16' in calls['bf16/pytorch']
    assert calls['bf16/openvino'].startswith('OpenVINO') and 'bf16' in calls['bf16/openvino']
    assert callable(calls['fp32/pytorch']) and callable(calls['fp32/openvino'])
