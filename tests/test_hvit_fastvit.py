"""FastViT backbone: pyramid, registries, errors, re-parameterization (fused == unfused), timm parity."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.converters.timm import timm_fastvit_to_mmeff
from mmeff.models.backbones.fastvit import FastViT
from mmeff.models.layers.reparam import Reparameterizable, switch_to_deploy
from mmeff.registry import CLS_MODELS, DET_MODELS

from helpers.unit_bn import load_backbone_from_timm, randomize_unit_bn_

ARCHS = ['t8', 't12', 's12', 'sa12', 'sa24', 'sa36', 'ma36']


def check_pyramid(arch, size):
    model = FastViT(arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.1)
    dims = FastViT.arch_zoo[arch]['embed_dims']
    x = torch.randn(1, 3, *size, requires_grad=True)
    outs = model(x)
    expected_channels = (*dims[:3], 2 * dims[3])  # the last map goes through the 2x classification conv
    assert [o.shape for o in outs] == [
        (1, c, size[0] // s, size[1] // s) for c, s in zip(expected_channels, (4, 8, 16, 32))]
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('arch', ['t8', 'sa12'])
@pytest.mark.parametrize('size', [(224, 224), (128, 192)])
def test_pyramid_forward_backward(arch, size):
    check_pyramid(arch, size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['t12', 's12', 'sa24', 'sa36', 'ma36'])
@pytest.mark.parametrize('size', [(224, 224), (256, 160)])
def test_pyramid_forward_backward_slow(arch, size):
    check_pyramid(arch, size)


def test_bare_last_stage_for_detection():
    model = FastViT('t8', out_indices=(1, 2, 3), final_conv=False)
    assert [o.shape[1] for o in model(torch.randn(1, 3, 128, 128))] == [96, 192, 384]


def fused_matches_unfused(arch, size=128):
    """In float64, so that the check is exact: with random weights a deep float32 model amplifies
    rounding differences (ma36: ~1e-4 relative in float32, ~1e-13 in float64)."""
    model = FastViT(arch, out_indices=(0, 1, 2, 3))
    randomize_unit_bn_(model)
    model.eval()
    model.double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        switch_to_deploy(model)
        actual = model(x)
    assert all(m.reparam_conv is not None for m in model.modules()
               if isinstance(m, Reparameterizable) and hasattr(m, 'reparam_conv'))
    # only the attention blocks' pre-norm stays a BatchNorm
    assert all(name.endswith('.norm') for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('arch', ['t8', 'sa12'])
def test_fused_equals_unfused(arch):
    fused_matches_unfused(arch)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['t12', 's12', 'sa24', 'sa36', 'ma36'])
def test_fused_equals_unfused_slow(arch):
    fused_matches_unfused(arch)


def test_timm_parity_with_unit_scale_bn():
    """Parity in the train-time form with BN affines near 1 (the generic twin test scales them down)."""
    timm = pytest.importorskip('timm')
    reference = timm.create_model('fastvit_sa12')
    randomize_unit_bn_(reference)
    reference.eval()
    model = FastViT('sa12')
    load_backbone_from_timm(model, reference, timm_fastvit_to_mmeff)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, actual = reference.forward_features(x), model(x)[0]
    diff = (expected - actual).abs().max().item()
    print(f'fastvit_sa12 features vs timm: max |diff| = {diff:.3e} (scale {expected.abs().max():.2f})')
    assert diff <= 1e-5 * max(expected.abs().max().item(), 1)


def test_registries():
    cfg = dict(type='FastViT', arch='t8', out_indices=(0, 3))
    assert isinstance(CLS_MODELS.build(cfg), FastViT)
    assert isinstance(DET_MODELS.build(cfg), FastViT)


def test_clear_errors():
    model = FastViT('t8')
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.randn(1, 3, 224, 200))
    with pytest.raises(KeyError, match='FastViT arch must be one of t8, t12'):
        FastViT('t9')
    with pytest.raises(ValueError, match='out_indices'):
        FastViT('t8', out_indices=(4, ))
