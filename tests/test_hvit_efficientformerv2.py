"""EfficientFormerV2 backbone: pyramid, other input sizes, registries, errors, the distilled-head conversion."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.converters.timm import timm_efficientformerv2_to_mmeff
from mmeff.models.backbones.efficientformer_v2 import EfficientFormerV2
from mmeff.registry import CLS_MODELS, DET_MODELS

from helpers.timm_parity import randomize_
from helpers.unit_bn import load_backbone_from_timm, randomize_unit_bn_

CHANNELS = {'s0': (32, 48, 96, 176), 's1': (32, 48, 120, 224), 's2': (32, 64, 144, 288), 'l': (40, 80, 192, 384)}


def check_pyramid(arch, size):
    model = EfficientFormerV2(arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.1)
    x = torch.randn(1, 3, *size, requires_grad=True)
    outs = model(x)
    assert [o.shape for o in outs] == [
        (1, c, size[0] // s, size[1] // s) for c, s in zip(CHANNELS[arch], (4, 8, 16, 32))]
    sum(o.mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize('size', [(224, 224), (160, 256)])
def test_s0_pyramid_forward_backward(size):
    check_pyramid('s0', size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['s1', 's2', 'l'])
@pytest.mark.parametrize('size', [(224, 224), (256, 192)])
def test_pyramid_forward_backward(arch, size):
    check_pyramid(arch, size)


def test_detection_size_640():
    model = EfficientFormerV2('s0', out_indices=(1, 2, 3))
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 640, 640))
    assert [o.shape[-1] for o in outs] == [80, 40, 20]


def test_bias_grid_for_other_training_size():
    """A model built for 256 px keeps its own bias tables; at 224 it resizes them to the 224 grids."""
    model = EfficientFormerV2('s0', img_size=256)
    model.eval()
    assert model.stages[3].blocks[-1].token_mixer.attention_biases.shape[-1] == 8 * 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224))[0].shape == (1, 176, 7, 7)


def test_registries():
    cfg = dict(type='EfficientFormerV2', arch='s0', out_indices=(0, 3))
    assert isinstance(CLS_MODELS.build(cfg), EfficientFormerV2)
    assert isinstance(DET_MODELS.build(cfg), EfficientFormerV2)


def test_clear_errors():
    model = EfficientFormerV2('s0')
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.randn(1, 3, 200, 224))
    with pytest.raises(KeyError, match='EfficientFormerV2 arch must be one of s0, s1, s2, l'):
        EfficientFormerV2('xl')
    with pytest.raises(ValueError, match='out_indices'):
        EfficientFormerV2('s0', out_indices=(4, ))


@pytest.mark.parametrize('distillation', [True, False])
def test_timm_heads_convert(distillation):
    """timm's distilled model averages two linear heads: the converter folds them into one.
    (timm 1.0.29's ``distillation=False`` model fails in ``forward``: its head is applied by hand.)"""
    timm = pytest.importorskip('timm')
    reference = timm.create_model('efficientformerv2_s0', distillation=distillation).eval()
    randomize_(reference)
    backbone = EfficientFormerV2('s0')
    backbone.eval()
    state = timm_efficientformerv2_to_mmeff(reference.state_dict())
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feat = backbone(x)[0].mean(dim=(2, 3))
        logits = feat @ state['head.fc.weight'].T + state['head.fc.bias']
        pooled = reference.forward_head(reference.forward_features(x), pre_logits=True)
        expected = reference.head(pooled)
        if distillation:
            expected = (expected + reference.head_dist(pooled)) / 2
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_timm_parity_at_another_training_size():
    """timm and mmeff built for 256 px (other bias grids), BN affines near 1: same final features."""
    timm = pytest.importorskip('timm')
    reference = timm.create_model('efficientformerv2_s0', img_size=256)
    randomize_unit_bn_(reference)
    reference.eval()
    model = EfficientFormerV2('s0', img_size=256)
    load_backbone_from_timm(model, reference, timm_efficientformerv2_to_mmeff)
    model.eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected, actual = reference.forward_features(x), model(x)[0]
    diff = (expected - actual).abs().max().item()
    print(f'efficientformerv2_s0 @256 features vs timm: max |diff| = {diff:.3e} (scale {expected.abs().max():.2f})')
    assert diff <= 1e-5 * max(expected.abs().max().item(), 1)
