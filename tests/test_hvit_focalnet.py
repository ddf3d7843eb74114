"""FocalNet (arXiv 2203.11926): shapes, strides, training step, sizes distinct per variant, input checks,
its projections as 1x1 convolutions."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.focalnet import FocalNet, MapLinear

from helpers.hvit_checks import check_forward_backward, check_pyramid, check_registries

VARIANTS = [('tiny', 2), pytest.param('tiny', 3, marks=pytest.mark.slow),
            pytest.param('small', 2, marks=pytest.mark.slow), pytest.param('small', 3, marks=pytest.mark.slow),
            pytest.param('base', 2, marks=pytest.mark.slow), pytest.param('base', 3, marks=pytest.mark.slow)]


@pytest.mark.parametrize('arch,focal_level', VARIANTS)
@pytest.mark.parametrize('size', [(224, 224), (256, 192)])
def test_forward_backward(arch, focal_level, size):
    check_forward_backward(FocalNet(arch, focal_level=focal_level, out_indices=(0, 1, 2, 3)), size)


@pytest.mark.parametrize('size', [(224, 224), (96, 160)])
def test_pyramid_shapes_and_strides(size):
    check_pyramid(FocalNet('tiny', out_indices=(0, 1, 2, 3)).eval(), size, [96, 192, 384, 768])


def test_every_variant_is_its_own_size():
    """The authors' factories built small for base_srf and srf for every lrf: not here."""
    with torch.device('meta'):
        counts = {(a, lvl): sum(p.numel() for p in FocalNet(a, focal_level=lvl).parameters())
                  for a in ('tiny', 'small', 'base') for lvl in (2, 3)}
    assert len(set(counts.values())) == len(counts), counts
    with torch.device('meta'):
        base = FocalNet('base', focal_level=3)
    assert base.num_features == [128, 256, 512, 1024]
    assert len(base.layers[0].blocks[0].modulation.focal_layers) == 3


def test_registries():
    check_registries(dict(type='FocalNet', arch='tiny', out_indices=(1, 2, 3)))


def test_invalid_input_size_is_explained():
    with pytest.raises(ValueError, match='multiples of 32'):
        FocalNet('tiny')(torch.rand(1, 3, 200, 224))


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(KeyError, match='tiny, small, base'):
        FocalNet('large')


def test_map_linear_is_a_linear_layer():
    """Same state dict as nn.Linear; the same outputs and gradients on a channels-last map (a strided one too)."""
    torch.manual_seed(0)
    linear, mapped = torch.nn.Linear(24, 40), MapLinear(24, 40)
    mapped.load_state_dict(linear.state_dict(), strict=True)
    for x in (torch.randn(2, 7, 9, 24), torch.randn(2, 7, 9, 30)[..., 3:27]):
        outs, grads = [], []
        for layer in (linear, mapped):
            layer.zero_grad()
            x_in = x.clone().requires_grad_()
            out = layer(x_in)
            out.pow(2).sum().backward()
            outs.append(out)
            grads.append([x_in.grad, layer.weight.grad, layer.bias.grad])
        assert outs[1].shape == (2, 7, 9, 40)
        pairs = [(outs[0], outs[1]), *zip(*grads)]
        diff = max(((a - b).abs().max() / a.abs().max()).item() for a, b in pairs)
        print(f'MapLinear vs nn.Linear: max |diff| / max |value| (outputs, gradients) {diff:.1e}')
        assert diff <= 1e-5
