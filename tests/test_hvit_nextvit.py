"""Next-ViT (arXiv 2207.05501): shapes, strides, training step, BN folding, input checks."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from helpers.hvit_checks import check_forward_backward, check_pyramid, check_registries
from mmeff.models.backbones.nextvit import NextViT
from mmeff.models.layers.reparam import switch_to_deploy
from helpers.timm_parity import randomize_

CHANNELS = [96, 256, 512, 1024]


@pytest.mark.parametrize('arch', ['small', pytest.param('base', marks=pytest.mark.slow),
                                  pytest.param('large', marks=pytest.mark.slow)])
@pytest.mark.parametrize('size', [(224, 224), (256, 192)])
def test_forward_backward(arch, size):
    check_forward_backward(NextViT(arch=arch, out_indices=(0, 1, 2, 3)), size)


@pytest.mark.parametrize('size', [(224, 224), (640, 640), (96, 160)])
def test_pyramid_shapes_and_strides(size):
    check_pyramid(NextViT('small', out_indices=(0, 1, 2, 3)).eval(), size, CHANNELS)


@pytest.mark.parametrize('arch', ['small', pytest.param('base', marks=pytest.mark.slow),
                                  pytest.param('large', marks=pytest.mark.slow)])
def test_bn_folding_keeps_outputs(arch):
    model = NextViT(arch, out_indices=(0, 1, 2, 3)).eval()
    randomize_(model)  # non-trivial BN statistics
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        actual = switch_to_deploy(model)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


def test_registries():
    check_registries(dict(type='NextViT', arch='small', out_indices=(1, 2, 3)))


def test_invalid_input_size_is_explained():
    with pytest.raises(ValueError, match='multiples of 32'):
        NextViT('small')(torch.rand(1, 3, 224, 200))


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(KeyError, match='small, base, large'):
        NextViT('tiny')
