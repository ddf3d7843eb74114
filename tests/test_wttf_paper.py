"""The efficient-ViT paper as mmeff reproduces it: its models' configs (params within 0.5 %), its FLOP
convention (fvcore + the authors' per-op weights), its accuracy table and its batch-size search."""
import csv
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.benchmark.model_table import format_paper_row, measure, paper_models_in, update_paper_table
from mmeff.benchmark.runner import measure_throughput
from mmeff.benchmark.wttf import load_paper_table, paper_accuracy, paper_row

from conftest import REPO

pytest.importorskip('fvcore', reason='the paper\'s FLOP convention counts with fvcore: pip install "mmeff[analysis]"')
from mmeff.benchmark.flops import count_wttf_flops  # noqa: E402

AUTHORS_TABLE = osp.join(REPO, '..', 'shared', 'reference', 'wttf_results.csv')


class Classifier(nn.Module):
    """A stand-in for an mmpretrain classifier: ``forward(x, mode='tensor')``."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x, mode='tensor'):
        return self.body(x)


class LinearGeluSoftmaxNorm(nn.Module):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        y = F.gelu(self.fc(x))
        return self.norm(y.softmax(-1) + y.exp()).sum(-1)


def test_wttf_weights_by_hand():
    x = torch.randn(1, 3, 4)
    elements = 3 * 8
    expected = (3 * 4 * 8  # the linear layer's multiply-adds (fvcore: 1 each, no bias)
                + 8 * elements  # GELU: 8 per element
                + 5 * elements  # softmax: 5
                + 20 * elements  # exp: 20
                + elements  # the add
                + 5 * elements  # LayerNorm with affine weights: fvcore's 5 per element
                + 3 * (8 - 1))  # the sum over 8: 7 adds for each of 3 outputs
    assert count_wttf_flops(Classifier(LinearGeluSoftmaxNorm()), x)['wttf_flops'] == expected


class Attention(nn.Module):

    def __init__(self, fused: bool):
        super().__init__()
        self.fused = fused

    def forward(self, x):
        q, k, v = x, x.flip(-2), x * 1.0  # B, H, N, D; the mul on v is counted in both paths
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        scores = (q @ k.transpose(-2, -1)) * 8 ** -0.5
        return scores.softmax(-1) @ v


def test_fused_attention_counts_as_the_explicit_one():
    x = torch.randn(2, 3, 10, 8)
    explicit = count_wttf_flops(Classifier(Attention(fused=False)), x)['wttf_flops']
    fused = count_wttf_flops(Classifier(Attention(fused=True)), x)
    assert fused['wttf_flops'] == explicit
    assert 'aten::scaled_dot_product_attention' not in fused['wttf_uncounted_ops']
    scores = 2 * 3 * 10 * 10
    assert explicit == 2 * scores * 8 + scores * (1 + 5) + 2 * 3 * 10 * 8


def test_fft2_is_counted_per_point_log_n():
    class Fourier(nn.Module):

        def forward(self, x):
            return torch.fft.irfft2(torch.fft.rfft2(x, dim=(1, 2)), s=(14, 14), dim=(1, 2))

    x = torch.randn(1, 14, 14, 4)
    n = 14 * 14
    expected = int(x.numel() * 2.5 * math.log2(n)) * 2  # the forward and the inverse transform
    assert count_wttf_flops(Classifier(Fourier()), x)['wttf_flops'] == expected


def test_shipped_table_is_the_authors_table():
    rows = load_paper_table()
    assert len(rows) == 35 == len({row['model_id'] for row in rows})
    with open(AUTHORS_TABLE, newline='') as f:
        runs = list(csv.DictReader(f))
    for row in rows:
        mine = [r for r in runs if r['model_id'] == row['model_id']]
        best_224 = max(float(r['top1_val_acc_best']) for r in mine if r['finetune_imsize'] == '224')
        assert row['top1_224'] == best_224
        assert osp.exists(osp.join(REPO, row['config'])), row['config']
    accuracy = paper_accuracy(224)
    assert accuracy['vit_small_p16_in1k-224'] == 82.54  # ViT-S/16's row speaks for the shared config
    assert paper_accuracy(384)['efficientformerv2_s0_in1k-224'] == paper_row(
        'configs/hvit/efficientformerv2/efficientformerv2_s0_in1k-224.py')['top1_high_res']  # fine-tuned at 382


def test_every_paper_model_has_a_config_within_half_a_percent_of_its_params():
    """Done when of the paper's issue: 35 / 35 within 0.5 % of the authors' parameter count."""
    off = {}
    for row in load_paper_table():
        params = measure_params(osp.join(REPO, row['config']))
        diff = (params / 1e6 - row['params_M']) / row['params_M']
        print(f'{row["model_name"]:28s} {params / 1e6:8.3f} M vs {row["params_M"]:8.3f} M ({100 * diff:+.2f} %)')
        if abs(diff) > 0.005:
            off[row['model_name']] = f'{params / 1e6:.3f} M vs {row["params_M"]} M'
    assert not off, off


def measure_params(config_path):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from mmeff.benchmark.subject import scope_of
    cfg = Config.fromfile(config_path)
    with DefaultScope.overwrite_default_scope(scope_of(cfg)):
        model = MODELS.build(cfg.model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('model_id', ['ViT-Ti/16', 'fnet_vit_small_patch16'])
def test_wttf_flops_of_a_paper_model_within_two_percent(model_id):
    row = next(r for r in load_paper_table() if r['model_id'] == model_id)
    measured = measure(osp.join(REPO, row['config']), 224, wttf=True)
    gflops, gmacs = measured['wttf_flops'] / 1e9, measured['macs'] / 1e9
    print(f'{model_id}: {gflops:.3f} GFLOPs (wttf) vs {row["GFLOPs_fvcore_custom"]}, {gmacs:.3f} GMACs vs '
          f'{row["GMACs_torchprofile"]}')
    assert gflops == pytest.approx(row['GFLOPs_fvcore_custom'], rel=0.02)
    assert gmacs == pytest.approx(row['GMACs_torchprofile'], rel=0.02)


@pytest.mark.slow
def test_wttf_flops_of_the_paper_models():
    """Done when: the paper's GFLOPs within 2 % for at least 33 of the 35."""
    off = {}
    for row in load_paper_table():
        gflops = measure(osp.join(REPO, row['config']), 224, wttf=True)['wttf_flops'] / 1e9
        if abs(gflops - row['GFLOPs_fvcore_custom']) > 0.02 * row['GFLOPs_fvcore_custom']:
            off[row['model_name']] = f'{gflops:.3f} vs {row["GFLOPs_fvcore_custom"]}'
    assert len(off) <= 2, off


def test_paper_table_rows_and_markers():
    models = paper_models_in('configs/vit')
    assert {m['path'] for m in models} >= {'vit/vit_small_p16_in1k-224.py', 'fnet/fnet_small_p16_in1k-224.py'}
    assert not any(m['path'].startswith('swin') for m in models)  # hierarchical ones are in configs/hvit
    row = format_paper_row(models[0], dict(params=22_059_000, macs=4_607_000_000, wttf_flops=4_753_200_000))
    assert '| 22.06 | 22.06 | +0.0 % | 4.607 | 4.607 | +0.0 % | 4.753 | 4.660 | +2.0 % |' in row
    readme = update_paper_table('# title\n', [row])
    assert update_paper_table(readme, ['| new |']).count('| new |') == 1
    assert row not in update_paper_table(readme, ['| new |'])


def test_auto_batch_search_stops_when_throughput_saturates():
    def time_batch(batch_size):  # images/s rise to 100 at batch 8, then stay
        return dict(median=batch_size / min(100.0, 12.5 * batch_size))

    result = measure_throughput(time_batch, 'auto', warmup=0, repeats=1)
    assert list(result['per_batch_size']) == [1, 2, 4, 8, 16]
    assert (result['batch_size'], result['images_per_s']) == (8, 100.0)


def test_auto_batch_search_stops_at_out_of_memory():
    def time_batch(batch_size):
        if batch_size > 4:
            raise RuntimeError('DefaultCPUAllocator: not enough memory: you tried to allocate')
        return dict(median=1.0 / batch_size)

    result = measure_throughput(time_batch, 'auto', warmup=0, repeats=1)
    assert result['per_batch_size'][8] == 'out of memory'
    assert result['batch_size'] == 4


def test_broadcast_matmul_counts_every_batch():
    class Project(nn.Module):  # Linformer's E @ K: one [k, N] matrix for every batch and head

        def __init__(self):
            super().__init__()
            self.proj = nn.Parameter(torch.randn(5, 10))

        def forward(self, x):
            return self.proj @ x

    x = torch.randn(2, 3, 10, 8)
    assert count_wttf_flops(Classifier(Project()), x)['wttf_flops'] == 2 * 3 * 5 * 10 * 8


def test_figure1_command_on_two_paper_models(tmp_path):
    """--accuracy paper: the paper's top-1 beside this machine's efficiency, Pareto fronts, correlations."""
    from test_benchmark_cli import run_cli
    configs = ['configs/vit/vit/vit_tiny_p16_in1k-224.py', 'configs/vit/fnet/fnet_small_p16_in1k-224.py']
    out = tmp_path / 'results.csv'
    proc = run_cli(*configs, '--accuracy', 'paper', '--metrics', 'params', 'flops', 'throughput',
                   '--flops-convention', 'wttf', '--batch-sizes', '1', '2', '--warmup', '0', '--repeats', '1',
                   '--threads', '1', '--plot-dir', str(tmp_path), '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline='') as f:
        rows = {row['name']: row for row in csv.DictReader(f)}
    assert float(rows['vit_tiny_p16_in1k-224']['accuracy']) == paper_accuracy()['vit_tiny_p16_in1k-224']
    assert float(rows['fnet_small_p16_in1k-224']['GFLOPs_wttf']) == pytest.approx(2.962, rel=0.02)
    assert float(rows['vit_tiny_p16_in1k-224']['paper_A100_img_s']) > 0
    assert 'Pareto-optimal' in proc.stdout and 'Spearman' in proc.stdout
    assert (tmp_path / 'pareto_GFLOPs_wttf.png').exists() and (tmp_path / 'pareto_throughput_img_s.png').exists()


def test_eval_amp_times_under_bf16_autocast_or_says_why_not(tmp_path):
    from test_benchmark_cli import TINY_CLASSIFIER

    from mmeff.benchmark import Subject, benchmark_config
    from mmeff.utils.precision import cpu_supports_bf16
    config = tmp_path / 'tiny_cls.py'
    config.write_text(TINY_CLASSIFIER)
    result = benchmark_config(str(config), ['latency'], (32, ), warmup=0, repeats=1, eval_precision='bf16')
    assert 'bf16' in result['protocol']['dtype']
    if not cpu_supports_bf16():
        assert 'bf16' in result['errors']['latency']
        return
    assert result['latency']['median'] > 0 and not result['errors']
    subject = Subject(str(config), (32, ))
    seen = []
    subject.model.backbone.conv1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    subject.infer_fn(1, 'bf16')()
    subject.infer_fn(1)()
    assert seen == [torch.bfloat16, torch.float32]


def test_eval_amp_is_refused_for_an_exported_backend(tmp_path):
    from mmeff.benchmark import benchmark_config
    with pytest.raises(ValueError, match='autocasts PyTorch'):
        benchmark_config(str(tmp_path / 'unused.py'), ['latency'], backend='onnxruntime', eval_precision='bf16')
