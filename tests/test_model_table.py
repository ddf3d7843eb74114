"""mmeff.benchmark.model_table and tools/analysis/model_table.py: MACs checked by hand and against mmengine's
counter; the README rewrite."""
import os.path as osp

import pytest
import torch

from mmeff.benchmark import model_table

from conftest import REPO, run_tool

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def config(path: str) -> str:
    return osp.join(REPO, 'configs', 'vit', path)


def test_vit_small_macs_by_hand():
    n, c, heads, depth, hidden = 197, 384, 6, 12, 1536
    block = (n * c * 3 * c  # qkv
             + 2 * heads * n * n * (c // heads)  # Q K^T and A V
             + n * c * c  # proj
             + 2 * n * c * hidden)  # MLP
    expected = 196 * (3 * 16 * 16) * c + depth * block + c * 1000  # patch embedding, blocks, head
    macs = model_table.measure(config('vit/vit_small_p16_in1k-224.py'), 224)['macs']
    print(f'ViT-S/16 at 224: {macs / 1e9:.4f} GMACs, by hand {expected / 1e9:.4f}')
    assert macs == expected


def test_matches_mmengine_counter_on_a_matmul_only_model():
    """mmengine (fvcore's handles) knows linear, conv and matmul but not SDPA or FFTs; on linear
    attention both count the same, apart from the LayerNorms mmengine adds (5 per element)."""
    from mmengine.analysis import FlopAnalyzer

    from mmeff.benchmark.subject import build_model, load_config
    path = config('linear_transformer/linear_transformer_tiny_p16_in1k-224.py')
    model = build_model(load_config(path)).requires_grad_(False)

    class Logits(torch.nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, x):
            return self.classifier(x, mode='tensor')

    analyzer = FlopAnalyzer(Logits(model), (torch.randn(1, 3, 224, 224), ))
    analyzer.unsupported_ops_warnings(False)
    by_op = analyzer.by_operator()
    theirs = analyzer.total() - by_op.get('layer_norm', 0)
    ours = model_table.measure(path, 224)['macs']
    print(f'linear attention Ti: count_ops {ours / 1e9:.4f} GMACs, mmengine without norms {theirs / 1e9:.4f} '
          f'({dict(by_op)})')
    assert ours == theirs


README = """Intro.

| config | taxonomy class | params (M) | params |
|---|---|---|---|
| [a_tiny_in1k-224](a/a_tiny_in1k-224.py) | Kernel attention | 1.00 | 1,000,000 |
| [b_tiny_in1k-224](b/b_tiny_in1k-224.py) | Baseline | 2.00 | 2,000,000 |

Notes.
"""


def test_update_rewrites_measured_rows_keeping_link_and_taxonomy():
    results = {'a/a_tiny_in1k-224.py': dict(params=1_234_567, macs=987_654_321),
               'c/c_tiny_in1k-224.py': dict(params=1, macs=1)}
    text, unlisted = model_table.update_readme(README, results, 224)
    lines = text.splitlines()
    assert lines[2] == '| config | taxonomy class | params (M) | GMACs (224) | params |'
    assert lines[3] == '|---|---|---|---|---|'
    assert lines[4] == '| [a_tiny_in1k-224](a/a_tiny_in1k-224.py) | Kernel attention | 1.23 | 0.99 | 1,234,567 |'
    assert lines[5] == README.splitlines()[5]  # not measured: unchanged
    assert text.endswith('Notes.\n') and unlisted == ['c/c_tiny_in1k-224.py']


def test_cli_prints_rows_with_progress(tmp_path):
    out = tmp_path / 'table.json'
    proc = run_tool('tools/analysis/model_table.py', 'configs/vit', '--only', 'vit/vit_tiny', '--out', str(out),
                    env=dict(OMP_NUM_THREADS='1'))
    assert '[1/1] vit/vit_tiny_p16_in1k-224.py: 5,721,832 params' in proc.stderr
    row = '| [vit_tiny_p16_in1k-224](vit/vit_tiny_p16_in1k-224.py) | Baseline | 5.72 | 1.25 | 5,721,832 |'
    assert row in proc.stdout
    assert out.exists()


@pytest.mark.parametrize('name, arch, label', [('swin_tiny_p4_w7_in1k-224', 'swin', 'tiny_p4_w7'),
                                               ('xcit_nano_12_p16_in1k-224', 'xcit', 'nano_12'),
                                               ('resnet18_in1k-224', 'resnet', 'resnet18'),
                                               ('wide_resnet50_2_in1k-224', 'resnet', 'wide_resnet50_2')])
def test_readme_summary_variant_labels(name, arch, label):
    assert model_table.variant_label(name, arch) == label
