"""EfficientViT (MIT, arXiv 2205.14756): shapes, strides, training step, linear attention, input checks."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.efficientvit_mit import EfficientViTMIT, LiteMLA

from helpers.hvit_checks import check_forward_backward, check_pyramid, check_registries

ARCHS = [a if a == 'b0' else pytest.param(a, marks=pytest.mark.slow) for a in EfficientViTMIT.arch_zoo]


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [(224, 224), (256, 192)])
def test_forward_backward(arch, size):
    check_forward_backward(EfficientViTMIT(arch, out_indices=(0, 1, 2, 3)), size)


@pytest.mark.parametrize('arch', ARCHS)
def test_pyramid_shapes_and_strides(arch):
    model = EfficientViTMIT(arch, out_indices=(0, 1, 2, 3)).eval()
    check_pyramid(model, (96, 160), list(EfficientViTMIT.arch_zoo[arch]['widths'][1:]))


def test_linear_attention_equals_its_quadratic_form():
    """ReLU linear attention computed key-value first equals the N x N form it stands for."""
    mla = LiteMLA(32, head_dim=16)
    q, k, v = torch.randn(3, 2, 4, 50, 16).unbind(0)
    sim = torch.relu(q) @ torch.relu(k).transpose(-1, -2)  # B, heads, N, N
    expected = (sim @ v) / (sim.sum(-1, keepdim=True) + mla.eps)
    torch.testing.assert_close(mla.linear_attention(q, k, v), expected, rtol=1e-4, atol=1e-5)


def test_registries():
    check_registries(dict(type='EfficientViTMIT', arch='b0', out_indices=(1, 2, 3)))


def test_invalid_input_size_is_explained():
    with pytest.raises(ValueError, match='multiples of 32'):
        EfficientViTMIT('b0')(torch.rand(1, 3, 224, 230))


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(KeyError, match='b0, b1, b2, b3, l1, l2'):
        EfficientViTMIT('m4')
