"""mmeff.benchmark: exact operation counts, Pareto fronts, correlations, sweeps."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.analysis import get_model_complexity_info
from torch import nn

from mmeff.benchmark import benchmark_config, correlations, count_ops, load_accuracy, pareto_front
from mmeff.benchmark.end2end import nms_thresholds
from mmeff.benchmark.runner import check_backend
from mmeff.benchmark.sweep import expand_sweep, parse_sweep
from mmeff.utils.timing import time_fn, time_interleaved

from conftest import REPO


def test_linear_macs():
    x = torch.randn(2, 5, 16)
    counts = count_ops(lambda: nn.Linear(16, 32)(x))
    # 2 x 5 tokens, each 16 x 32 multiply-adds; the bias is not counted
    assert counts['macs'] == 2 * 5 * 16 * 32
    assert counts['flops'] == 2 * counts['macs']
    assert counts['elementwise_ops'] == 0


def test_conv2d_macs():
    x = torch.randn(1, 3, 16, 16)
    # 8 x 8 output positions x 8 output channels, each 3 x 3 x 3 multiply-adds
    assert count_ops(lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1)(x))['macs'] == 8 * 8 * 8 * 27
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_ops(lambda: depthwise(torch.randn(1, 8, 10, 10)))['macs'] == 10 * 10 * 8 * 9


class Attention(nn.Module):
    """A 2-head attention block, with PyTorch's fused kernel or written out."""

    def __init__(self, dim=16, num_heads=2, fused=True):
        super().__init__()
        self.num_heads, self.fused = num_heads, fused
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


# B=2, N=10, C=16, 2 heads of 8: qkv 2*10*16*48, QK^T and AV 2*2*10*10*8 each, proj 2*10*16*16
ATTENTION_MACS = 15360 + 2 * 3200 + 5120


@pytest.mark.parametrize('fused', [True, False])
def test_attention_macs(fused):
    block = Attention(fused=fused).eval()
    x = torch.randn(2, 10, 16)
    counts = count_ops(lambda: block(x))
    assert counts['macs'] == ATTENTION_MACS
    # the softmax over 2*2*10*10 scores; the written-out path also scales q (2*2*10*8)
    assert counts['elementwise_ops'] == (400 if fused else 400 + 320)


class FNetMixer(nn.Module):
    """FNet's token mixing: Re(FFT over tokens and channels)."""

    def forward(self, x):
        return torch.fft.fft2(x, dim=(-2, -1)).real


class GlobalFilter(nn.Module):
    """GFNet's mixing: a learned filter multiplied in the 2-D Fourier domain of the patch grid."""

    def __init__(self, h=8, w=8, dim=4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(h, w // 2 + 1, dim, dtype=torch.cfloat))

    def forward(self, x):  # B, h, w, C
        spectrum = torch.fft.rfft2(x, dim=(1, 2)) * self.weight
        return torch.fft.irfft2(spectrum, s=x.shape[1:3], dim=(1, 2))


def test_fft_mixer_macs():
    # complex FFT over L = 16 * 8 points on 2 * 16 * 8 elements: 5/2 * M * log2(L)
    assert count_ops(lambda: FNetMixer()(torch.randn(2, 16, 8)))['macs'] == 2.5 * 256 * 7
    # rfft2 and irfft2 over the 8 x 8 grid of 256 real values: half of the complex cost each
    counts = count_ops(lambda: GlobalFilter()(torch.randn(1, 8, 8, 4)))
    assert counts['macs_by_op'] == {'aten._fft_r2c': 1920, 'aten._fft_c2r': 1920}
    assert counts['elementwise_ops'] == 8 * 5 * 4  # the complex filter product


def test_agrees_with_mmengine_where_both_are_right():
    """mmengine's ``get_model_complexity_info`` (fvcore's jit-traced counter) against ours.

    Same: convolution and linear MACs (one multiply-add = 1, biases not counted).
    Differences, each checked below:
    - mmengine adds batch norm (2 ops per element with affine, in eval mode) and adaptive average
      pooling (1 per input element) into its total; mmeff keeps all such cheap ops out of ``macs``
      and reports them in ``elementwise_ops`` (1 per element, ReLU included).
    - mmengine does not count ``scaled_dot_product_attention`` (it warns "unsupported operator"),
      so the fused attention block misses its QK^T and AV products there.
    """
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    x = torch.randn(1, 3, 16, 16)
    theirs = get_model_complexity_info(net, inputs=(x, ), show_table=False, show_arch=False)['flops']
    ours = count_ops(lambda: net(x))
    conv_linear = 16 * 16 * 8 * 27 + 8 * 8 * 16 * 72 + 16 * 10
    norm_elements, pool_inputs = 8 * 16 * 16 + 16 * 8 * 8, 16 * 8 * 8
    assert ours['macs'] == conv_linear
    assert theirs == conv_linear + 2 * norm_elements + pool_inputs
    assert ours['elementwise_ops'] == norm_elements + norm_elements + pool_inputs  # norms, ReLUs, pooling

    block, tokens = Attention(fused=True).eval(), torch.randn(2, 10, 16)
    theirs = get_model_complexity_info(block, inputs=(tokens, ), show_table=False, show_arch=False)['flops']
    assert theirs == ATTENTION_MACS - 2 * 3200


def test_pareto_front_of_a_hand_made_table():
    rows = [
        dict(name='a', accuracy=70.0, latency_ms=10.0, throughput_img_s=100.0),
        dict(name='b', accuracy=75.0, latency_ms=20.0, throughput_img_s=90.0),
        dict(name='c', accuracy=74.0, latency_ms=25.0, throughput_img_s=95.0),  # worse than b in latency
        dict(name='d', accuracy=80.0, latency_ms=40.0, throughput_img_s=20.0),
        dict(name='e', accuracy=80.0, latency_ms=45.0, throughput_img_s=15.0),  # as accurate as d, slower
        dict(name='f', accuracy=65.0, latency_ms=10.0, throughput_img_s=100.0),  # dominated by a
    ]
    assert pareto_front(rows, 'latency_ms') == [True, True, False, True, False, False]
    # throughput: more is better; c is faster than b but less accurate, so it joins the front
    assert pareto_front(rows, 'throughput_img_s') == [True, True, True, True, False, False]


def test_correlations():
    rows = [dict(x=float(i), linear=3.0 * i + 1, cubic=float(i)**3, flat=1.0) for i in range(1, 6)]
    rows.append(dict(x=6.0))  # missing values: the pair is skipped for this row
    result = correlations(rows, ['x', 'linear', 'cubic', 'flat'])
    assert result['pearson']['x']['linear'] == pytest.approx(1.0)
    assert result['spearman']['x']['cubic'] == pytest.approx(1.0)
    assert result['pearson']['x']['cubic'] < 0.99
    assert math.isnan(result['pearson']['x']['flat'])  # a constant column has no correlation


def test_sweep():
    assert parse_sweep('model.test_cfg.eval_idx=0,2') == ('model.test_cfg.eval_idx', [0, 2])
    runs = expand_sweep('configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py', ['model.test_cfg.eval_idx=0,1', 'model.x=a'])
    assert runs == [('rtdetr_r50vd_4xb4-72e_coco@eval_idx=0,x=a', {'model.test_cfg.eval_idx': 0, 'model.x': 'a'}),
                    ('rtdetr_r50vd_4xb4-72e_coco@eval_idx=1,x=a', {'model.test_cfg.eval_idx': 1, 'model.x': 'a'})]
    assert expand_sweep('a.py', []) == [('a', {})]
    with pytest.raises(ValueError, match='KEY=V1,V2'):
        parse_sweep('eval_idx')


def test_nms_threshold_grid():
    from mmengine.config import ConfigDict
    test_cfg = ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    grid = nms_thresholds(test_cfg, [0.001, 0.3], [0.6, 0.7])
    assert [(c.score_thr, c.nms.iou_threshold) for c in grid] == [(0.001, 0.6), (0.001, 0.7), (0.3, 0.6),
                                                                     (0.3, 0.7)]
    assert test_cfg.score_thr == 0.05  # the model's own config is left alone
    assert nms_thresholds(ConfigDict(max_per_img=300), [0.1], [0.5]) == [ConfigDict(max_per_img=300)]


def test_backends_are_checked():
    with pytest.raises(ValueError, match='unknown backend'):
        check_backend('ncnn')
    check_backend('pytorch')
    pytest.importorskip('onnxruntime', reason='the deploy extra is not installed')
    check_backend('onnxruntime')
    check_backend('openvino')


def test_tensorrt_backend_says_why_it_cannot_run():
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed')
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match='TensorRT is not installed'):
        check_backend('tensorrt')


def test_load_accuracy(tmp_path):
    # tools/test.py writes mmengine's metrics json; a table may point at it instead of giving a number
    (tmp_path / 'det_metrics.json').write_text('{"coco/bbox_mAP": 0.431, "coco/bbox_mAP_50": 0.6}')
    (tmp_path / 'acc.csv').write_text('config,accuracy\nconfigs/vit/vit_tiny.py,72.5\nrtmdet,det_metrics.json\n')
    assert load_accuracy(str(tmp_path / 'acc.csv')) == {'vit_tiny': 72.5, 'rtmdet': 0.431}
    (tmp_path / 'acc.json').write_text('[{"config": "a.py", "accuracy": 1.5}]')
    assert load_accuracy(str(tmp_path / 'acc.json')) == {'a': 1.5}


def test_flops_of_a_model_with_an_expanded_class_token(mmpretrain_scope):
    """CaiT expands its class token under no_grad: a view that still requires grad, which torch's
    module tracker rejects unless the parameters are frozen while counting."""
    result = benchmark_config(osp.join(REPO, 'configs', 'vit', 'cait', 'cait_xxs24_p16_in1k-224.py'), ['flops'], (64, ),
                              cfg_options={'model.backbone.img_size': 64})
    assert not result['errors'], result['errors']
    # CaiT-XXS24 (the paper's Table 1): width C = 192, 24 talking-heads self-attention layers of 4
    # heads, MLP ratio 4, 2 class-attention layers; at 64 px, N = (64 / 16)^2 = 16 patch tokens.
    C, H, N, depth, class_depth, hidden = 192, 4, 16, 24, 2, 4 * 192
    patch_embed = N * C * 3 * 16 * 16
    self_attention = (N * C * 3 * C       # qkv
                      + 2 * N * N * C     # Q K^T and A V
                      + 2 * N * N * H * H  # the talking-heads mixing before and after the softmax
                      + N * C * C)        # proj
    mlp = 2 * N * C * hidden
    class_attention = (C * C + 2 * (N + 1) * C * C  # q of the class token, k and v of all N + 1 tokens
                       + 2 * (N + 1) * C              # its scores and weighted sum
                       + C * C + 2 * C * hidden)      # proj and MLP, of the class token only
    head = C * 1000
    expected = patch_embed + depth * (self_attention + mlp) + class_depth * class_attention + head
    print(f"CaiT-XXS24 at 64 px: {result['flops']['macs']} MACs counted, {expected} by formula")
    assert result['flops']['macs'] == expected == 178_233_600
    assert result['flops']['flops'] == 2 * expected and result['flops']['batch_size'] == 1


def test_a_config_builds_twice():
    """The onnxruntime backend builds the model again from the benchmark's config: a DETR build
    (mmdet writes num_pred_layer etc. into the head dict it is given) must not change the config."""
    from mmengine.config import Config

    from mmeff.benchmark.subject import build_model
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'rtdetr', 'rtdetr_r18vd_demo-256.py'))
    head_before = cfg.model.bbox_head.to_dict()
    build_model(cfg)
    assert cfg.model.bbox_head.to_dict() == head_before
    build_model(cfg)


def test_interleaved_timing_alternates_the_callables():
    calls = []
    timings = time_interleaved(dict(a=lambda: calls.append('a'), b=lambda: calls.append('b')), warmup=1, repeats=3)
    assert ''.join(calls) == 'ab' + 'ab' + 'ba' + 'ab'  # warm-up, then the order reversed every repeat
    assert all(len(t['times']) == 3 and t['median'] >= 0 for t in timings.values())
    assert 'times' not in time_fn(lambda: None, warmup=0, repeats=2)  # one-line summaries stay flat
