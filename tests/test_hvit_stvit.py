"""STViT-R on Swin: semantic tokens in the third stage, image tokens recovered for the next stage."""
import os

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.benchmark.flops import count_ops
from mmeff.models.backbones.stvit_swin import SemanticTokenCycle, from_windows, to_windows
from mmeff.registry import CLS_MODELS, DET_MODELS

from helpers.mmdet_detector import build_retinanet

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs', 'hvit')


def build_classifier(name: str):
    return CLS_MODELS.build(Config.fromfile(os.path.join(CONFIGS, name)).model)


def forward_backward(model, size: int):
    model.train()
    logits = model(torch.randn(1, 3, size, size), mode='tensor')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_forward_backward_tiny():
    model = build_classifier('stvit/stvit_swin_tiny_p4_w7_in1k-224.py')
    forward_backward(model, 224)
    forward_backward(model, 336)  # 21x21 third stage: 9 windows


@pytest.mark.parametrize('size', [224, 448])
def test_pyramid_shapes_and_strides(size):
    backbone = DET_MODELS.build(dict(type='STViTSwin', arch='tiny', out_indices=(0, 1, 2, 3))).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(1, c, size // s, size // s)
                                              for c, s in ((96, 4), (192, 8), (384, 16), (768, 32))]


def test_registered_in_both_registries():
    assert CLS_MODELS.get('STViTSwin') is DET_MODELS.get('STViTSwin') is not None


def test_fewer_macs_than_swin():
    """The point of the model: the third stage computes mostly on 36 instead of 196 tokens."""
    macs = {}
    for name in ('stvit/stvit_swin_tiny_p4_w7_in1k-224.py', 'swin/swin_tiny_p4_w7_in1k-224.py'):
        model = build_classifier(name).eval()
        macs[name.split('/')[0]] = count_ops(lambda: model(torch.randn(1, 3, 224, 224), mode='tensor'))['macs']
    assert macs['stvit'] < 0.85 * macs['swin']


def test_windows_round_trip():
    x = torch.randn(2, 6, 12, 5)
    windows = to_windows(x, 3)
    assert windows.shape == (2 * 8, 9, 5)  # 2 x 4 windows of 3 x 3 per image
    torch.testing.assert_close(windows[1], x[0, :3, 3:6].reshape(9, 5))  # window (0, 1) of image 0
    torch.testing.assert_close(from_windows(windows, 3, (6, 12)), x)


def test_pooling_initialization_is_per_window_max_pooling():
    """Pooling the whole map to (H / 7 * 3) equals pooling every 7x7 window to 3x3 separately."""
    x = torch.randn(1, 8, 14, 21)
    whole = F.adaptive_max_pool2d(x, (6, 9))
    for i in range(2):
        for j in range(3):
            window = x[:, :, 7 * i:7 * i + 7, 7 * j:7 * j + 7]
            torch.testing.assert_close(whole[:, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3], F.adaptive_max_pool2d(window, 3))


def test_cluster_centers_are_attention_outputs():
    """The first semantic block replaces its pooled queries by the attention output (no query residual)."""
    cycle = SemanticTokenCycle(8, 2, 7, 3, 10, [0.] * 6)
    block = cycle.pooled_attention
    torch.nn.init.zeros_(block.ls1.weight)
    torch.nn.init.zeros_(block.ls2.weight)
    assert block(torch.randn(1, 9, 8), torch.randn(1, 109, 8)).abs().max() == 0


def test_regions_are_enlarged_windows():
    """At 14x14 the 10x10 regions start at 0 and 4 (the authors' crops); every region covers its window."""
    cycle = SemanticTokenCycle(8, 2, 7, 3, 10, [0.] * 6)
    grid = torch.arange(28 * 14).float().view(1, 28, 14, 1)  # B, H, W, C: value = token index
    regions = cycle.regions(grid).view(4, 2, 10, 10)  # windows (4 x 2), 10 x 10 tokens each
    torch.testing.assert_close(regions[0, 0], grid[0, 0:10, 0:10, 0])
    torch.testing.assert_close(regions[0, 1], grid[0, 0:10, 4:14, 0])
    for i in range(4):
        rows = regions[i, 0, :, 0] // 14
        assert rows.min() <= 7 * i and rows.max() >= 7 * i + 6


def test_clear_errors():
    backbone = CLS_MODELS.build(dict(type='STViTSwin', arch='tiny'))
    with pytest.raises(ValueError, match='multiples of 112'):
        backbone(torch.randn(1, 3, 256, 256))
    with pytest.raises(ValueError, match='multiple of 6'):
        CLS_MODELS.build(dict(type='STViTSwin', arch=dict(embed_dims=96, depths=[2, 2, 4, 2], num_heads=[3, 6, 12,
                                                                                                         24])))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['small', 'base'])
def test_forward_backward_bigger(name):
    model = build_classifier(f'stvit/stvit_swin_{name}_p4_w7_in1k-224.py')
    assert len(model.backbone.stages[2].blocks) == 3  # depth 18: three cycles
    forward_backward(model, 224)


def test_backbone_in_stock_mmdet_detector():
    detector = build_retinanet(dict(type='STViTSwin', arch='tiny', out_indices=(1, 2, 3)), [192, 384, 768]).eval()
    with torch.no_grad():
        cls_scores, _ = detector(torch.randn(1, 3, 224, 224), mode='tensor')
    assert [s.shape[-1] for s in cls_scores] == [28, 14, 7, 4, 2]
