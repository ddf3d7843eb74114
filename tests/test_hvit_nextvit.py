"""Next-ViT (arXiv 2207.05501): shapes, strides, training step, BN folding, input checks."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.nextvit import NextViT
from mmeff.models.layers.reparam import switch_to_deploy

from helpers.hvit_checks import check_forward_backward, check_pyramid, check_registries

CHANNELS = [96, 256, 512, 1024]


def randomize_bn_(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affines (fresh BNs are identities, which folding would not test),
    mild enough that the deep variants stay well-conditioned."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))


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
    model = NextViT(arch, out_indices=(0, 1, 2, 3))
    model.init_weights()
    randomize_bn_(model.eval())
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        actual = switch_to_deploy(model)(x)
    # only the final BN is left: it follows a residual sum, nothing to fold it into
    assert [type(m) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] == [
        torch.nn.BatchNorm2d]
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
