"""The MMPretrain backbones of the hierarchical family (Swin, Swin V2, XCiT, MLP-Mixer, ResNet, HiViT).

Smallest variants in the default suite: forward/backward of the classifier config at 224 and another size,
the pyramid each returns for a detector, reachability from both registries, errors for bad inputs.
"""
import os

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from mmengine.config import Config
from mmpretrain.models.utils import ShiftWindowMSA

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.mmpretrain_lean import LEAN_MERGINGS
from mmeff.models.backbones.swin_v2 import RECOMPUTED_TABLES
from mmeff.registry import CLS_MODELS, DET_MODELS

from helpers.mmdet_detector import build_retinanet

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs', 'hvit')


def build_classifier(config: str, **backbone):
    cfg = Config.fromfile(os.path.join(CONFIGS, config))
    cfg.model.backbone.update(backbone)
    return CLS_MODELS.build(cfg.model)


def forward_backward(model, size: int):
    model.train()
    logits = model(torch.randn(1, 3, size, size), mode='tensor')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# (config, another valid size, backbone overrides the other size needs)
SMALLEST = [
    ('swin/swin_tiny_p4_w7_in1k-224.py', 256, {}),  # windows pad the 64/32/16/8 maps
    ('swinv2/swinv2_tiny_w7_in1k-224.py', 256, {}),
    ('xcit/xcit_nano_12_p16_in1k-224.py', 160, {}),
    ('mixer/mixer_s16_in1k-224.py', 256, dict(img_size=256)),  # token MLPs are sized for the grid
    ('resnet/resnet18_in1k-224.py', 160, {}),
    ('hivit/hivit_tiny_p16_in1k-224.py', 256, dict(img_size=256)),  # relative position bias of the grid
]


@pytest.mark.parametrize('config,size,overrides', SMALLEST, ids=[c for c, _, _ in SMALLEST])
def test_forward_backward(config, size, overrides):
    forward_backward(build_classifier(config), 224)
    if overrides:
        forward_backward(build_classifier(config, **overrides), size)
    else:
        forward_backward(build_classifier(config), size)


# backbone config as an mmdet config names it, expected (channels, stride) per stage
PYRAMIDS = [
    (dict(type='LeanSwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3)),
     [(96, 4), (192, 8), (384, 16), (768, 32)]),
    (dict(type='SwinTransformerV2Strict', arch='tiny', img_size=224, window_size=7, out_indices=(0, 1, 2, 3)),
     [(96, 4), (192, 8), (384, 16), (768, 32)]),
    (dict(type='mmpretrain.ResNet', depth=18, out_indices=(0, 1, 2, 3)), [(64, 4), (128, 8), (256, 16), (512, 32)]),
    (dict(type='HiViTPyramid', arch='tiny', out_indices=(0, 1, 2)), [(96, 4), (192, 8), (384, 16)]),
]


@pytest.mark.parametrize('cfg,expected', PYRAMIDS, ids=[c['type'] for c, _ in PYRAMIDS])
def test_pyramid(cfg, expected):
    backbone = DET_MODELS.build(cfg)
    backbone.eval()  # MMPretrain's train() returns None, so no chaining
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, c, 224 // s, 224 // s) for c, s in expected]


def test_xcit_stride16_maps_for_a_simple_pyramid():
    """XCiT is isotropic: a detector takes its patch tokens as stride-16 maps (ViTDet-style simple pyramid)."""
    backbone = DET_MODELS.build(dict(type='mmpretrain.XCiT', embed_dims=128, depth=12, num_heads=4,
                                     out_type='featmap', out_indices=(3, 7, 11)))
    backbone.eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 14, 14)] * 3


@pytest.mark.parametrize('name', ['SwinTransformer', 'SwinTransformerV2', 'XCiT', 'MlpMixer', 'ResNet', 'HiViT'])
def test_mmpretrain_backbones_reachable_from_mmdet(name):
    """An mmdet config names MMPretrain's backbones with the scope prefix (plain 'SwinTransformer' and
    'ResNet' are mmdet's own)."""
    assert name in CLS_MODELS.module_dict
    assert DET_MODELS.get(f'mmpretrain.{name}') is CLS_MODELS.get(name)


@pytest.mark.parametrize('name', ['SwinTransformerV2Strict', 'HiViTPyramid'])
def test_mmeff_backbones_in_both_registries(name):
    assert CLS_MODELS.get(name) is DET_MODELS.get(name) is not None


def test_swin_from_mmdet_config_builds_and_runs():
    backbone = DET_MODELS.build(dict(type='mmpretrain.SwinTransformer', arch='tiny', out_indices=(1, 2, 3)))
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 224, 224))
    assert [o.shape[1] for o in outs] == [192, 384, 768]


def test_swinv2_state_dict_loads_strictly():
    """MMPretrain's own SwinTransformerV2 drops its position tables on load, so strict loading fails."""
    model = CLS_MODELS.build(dict(type='SwinTransformerV2Strict', arch='tiny', img_size=224, window_size=7))
    model.load_state_dict(model.state_dict(), strict=True)
    assert not any('relative_coords_table' in k for k in model.state_dict())


# mmeff's lean backbone, MMPretrain's model it equals, input sizes (a new size rebuilds the cached window mask;
# 228 px pads the 57x57 map to whole 2x2 cells for the first patch merging)
LEAN = [
    (dict(type='LeanSwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3)),
     dict(type='SwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3)), (224, 228, 224)),
    (dict(type='SwinTransformerV2Strict', arch='tiny', window_size=7, out_indices=(0, 1, 2, 3)),
     dict(type='SwinTransformerV2', arch='tiny', window_size=7, out_indices=(0, 1, 2, 3)), (224, 228, 224)),
    (dict(type='LeanMlpMixer', arch='s', img_size=224, patch_size=16),
     dict(type='MlpMixer', arch='s', img_size=224, patch_size=16), (224, 224)),
    (dict(type='LeanXCiT', embed_dims=128, depth=12, num_heads=4, out_type='cls_token'),
     dict(type='XCiT', embed_dims=128, depth=12, num_heads=4, out_type='cls_token'), (224, 224)),
]


def with_seed(model, x):
    torch.manual_seed(1)
    return model(x)


@pytest.mark.parametrize('lean,reference,sizes', LEAN, ids=[lean['type'] for lean, _, _ in LEAN])
def test_lean_backbone_is_mmpretrains(lean, reference, sizes):
    """Same state dict and the same outputs in training and eval mode (to float rounding: the patch merging
    sums its cells in another order)."""
    torch.manual_seed(0)
    model, expected = CLS_MODELS.build(lean), CLS_MODELS.build(reference)
    theirs, ours = expected.state_dict(), model.state_dict()
    # MMPretrain's V2 also saves the position tables that SwinTransformerV2Strict recomputes
    recomputed = RECOMPUTED_TABLES if reference['type'] == 'SwinTransformerV2' else ()
    assert set(ours) == {k for k in theirs if not k.endswith(recomputed)}
    model.load_state_dict({k: theirs[k] for k in ours}, strict=True)
    overheads = (ShiftWindowMSA, FFN, *LEAN_MERGINGS)
    assert not any(type(m) in overheads for m in model.modules())  # every such layer made lean
    for training in (False, True):
        model.train(training)
        expected.train(training)
        for size in sizes:
            x = torch.randn(1, 3, size, size)
            with torch.no_grad():
                outs = [with_seed(m, x) for m in (model, expected)]  # the same drop paths in training
            diff = max((a - b).abs().max().item() for a, b in zip(*outs))
            print(f'{lean["type"]} {"train" if training else "eval"} {size} px: max |diff| {diff:.1e}')
            assert diff <= 1e-5


def test_hivit_sizes_are_the_papers():
    """19.2M / 37.5M / 66.4M parameters (the HiViT paper); MMPretrain's own 'base' has 24 blocks (79M)."""
    for arch, millions in (('tiny', 19.2), ('small', 37.5), ('base', 66.4)):
        with torch.device('meta'):
            model = build_classifier(f'hivit/hivit_{arch}_p16_in1k-224.py')
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


def test_hivit_avg_featmap_is_the_official_classifier_input():
    backbone = CLS_MODELS.build(dict(type='HiViTPyramid', arch='tiny', out_type='avg_featmap')).eval()
    pyramid = CLS_MODELS.build(dict(type='HiViTPyramid', arch='tiny')).eval()
    pyramid.load_state_dict(backbone.state_dict(), strict=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pooled = backbone(x)[-1]
        expected = backbone.fc_norm(pyramid(x)[-1].flatten(2).mean(dim=2))
    torch.testing.assert_close(pooled, expected)


def test_clear_errors():
    hivit = CLS_MODELS.build(dict(type='HiViTPyramid', arch='tiny'))
    with pytest.raises(ValueError, match='img_size=256'):
        hivit(torch.randn(1, 3, 256, 256))
    with pytest.raises(ValueError, match='multiples of 16'):
        hivit(torch.randn(1, 3, 200, 200))
    with pytest.raises(KeyError, match='HiViTPyramid arch must be one of t, tiny, s, small, b, base'):
        CLS_MODELS.build(dict(type='HiViTPyramid', arch='huge'))
    with pytest.raises(ValueError, match='stages 0..2'):
        CLS_MODELS.build(dict(type='HiViTPyramid', arch='tiny', out_indices=(3, )))
    mixer = CLS_MODELS.build(dict(type='LeanMlpMixer', arch='s', img_size=224, patch_size=16))
    with pytest.raises(AssertionError, match='224'):  # MMPretrain's message names the size it takes
        mixer(torch.randn(1, 3, 256, 256))
    swin = CLS_MODELS.build(dict(type='LeanSwinTransformer', arch='tiny'))
    with pytest.raises(AssertionError, match='pad_small_map'):  # last map smaller than a window
        swin(torch.randn(1, 3, 128, 128))


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'swin/swin_small_p4_w7_in1k-224.py', 'swin/swin_base_p4_w7_in1k-224.py',
    'swinv2/swinv2_small_w7_in1k-224.py', 'swinv2/swinv2_base_w7_in1k-224.py',
    'xcit/xcit_tiny_12_p16_in1k-224.py', 'xcit/xcit_tiny_24_p16_in1k-224.py', 'xcit/xcit_small_12_p16_in1k-224.py',
    'xcit/xcit_small_24_p16_in1k-224.py', 'xcit/xcit_medium_24_p16_in1k-224.py',
    'mixer/mixer_s32_in1k-224.py', 'mixer/mixer_b16_in1k-224.py', 'mixer/mixer_b32_in1k-224.py',
    'resnet/resnet34_in1k-224.py', 'resnet/resnet50_in1k-224.py', 'resnet/resnet101_in1k-224.py',
    'resnet/wide_resnet50_2_in1k-224.py',
    'hivit/hivit_small_p16_in1k-224.py', 'hivit/hivit_base_p16_in1k-224.py',
])
def test_forward_backward_bigger_variants(config):
    forward_backward(build_classifier(config), 224)


@pytest.mark.parametrize('backbone,in_channels', [
    (dict(type='LeanSwinTransformer', arch='tiny', out_indices=(1, 2, 3)), [192, 384, 768]),
    (dict(type='SwinTransformerV2Strict', arch='tiny', img_size=224, window_size=7, out_indices=(1, 2, 3)),
     [192, 384, 768]),
], ids=['LeanSwinTransformer', 'SwinTransformerV2Strict'])
def test_backbone_in_stock_mmdet_detector(backbone, in_channels):
    detector = build_retinanet(backbone, in_channels).eval()
    with torch.no_grad():
        cls_scores, _ = detector(torch.randn(1, 3, 224, 224), mode='tensor')
    assert [s.shape[-1] for s in cls_scores] == [28, 14, 7, 4, 2]  # strides 8 to 128
