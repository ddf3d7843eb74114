"""SwiftFormer backbone: pyramid, registries, errors, additive attention against its definition."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.converters.timm import timm_swiftformer_to_mmeff
from mmeff.models.backbones.swiftformer import EfficientAdditiveAttention, SwiftFormer
from mmeff.registry import CLS_MODELS, DET_MODELS

from helpers.unit_bn import load_backbone_from_timm, randomize_unit_bn_


def check_pyramid(arch, size):
    model = SwiftFormer(arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.1)
    dims = SwiftFormer.arch_zoo[arch]['embed_dims']
    x = torch.randn(1, 3, *size, requires_grad=True)
    outs = model(x)
    assert [o.shape for o in outs] == [(1, c, size[0] // s, size[1] // s) for c, s in zip(dims, (4, 8, 16, 32))]
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('size', [(224, 224), (128, 192)])
def test_xs_pyramid_forward_backward(size):
    check_pyramid('xs', size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['s', 'l1', 'l3'])
@pytest.mark.parametrize('size', [(224, 224), (256, 160)])
def test_pyramid_forward_backward(arch, size):
    check_pyramid(arch, size)


def test_additive_attention_definition():
    """Eq. 4-6: alpha = Q w_a / sqrt(d) (L2-normalised over tokens), q_g = sum_i alpha_i q_i,
    out = final(proj(q_g * K) + Q), with Q and K L2-normalised per token; token by token."""
    torch.manual_seed(0)
    attn = EfficientAdditiveAttention(8, 8)
    x = torch.randn(2, 8, 3, 4)
    out = attn(x)
    for b in range(2):
        tokens = x[b].flatten(1).T  # N, C
        q = [t / t.norm() for t in attn.to_query(tokens)]
        k = [t / t.norm() for t in attn.to_key(tokens)]
        a = torch.stack([(qi @ attn.w_g[:, 0]) / 8 ** 0.5 for qi in q])
        a = a / a.norm()
        g = sum(ai * qi for ai, qi in zip(a, q))
        expected = torch.stack([attn.final(attn.proj(g * ki) + qi) for qi, ki in zip(q, k)])  # N, C
        torch.testing.assert_close(out[b].flatten(1).T, expected, atol=1e-6, rtol=1e-5)


def test_registries():
    cfg = dict(type='SwiftFormer', arch='xs', out_indices=(0, 3))
    assert isinstance(CLS_MODELS.build(cfg), SwiftFormer)
    assert isinstance(DET_MODELS.build(cfg), SwiftFormer)


def test_clear_errors():
    model = SwiftFormer('xs')
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.randn(1, 3, 100, 224))
    with pytest.raises(KeyError, match='SwiftFormer arch must be one of xs, s, l1, l3'):
        SwiftFormer('m')
    with pytest.raises(ValueError, match='out_indices'):
        SwiftFormer('xs', out_indices=(0, 5))


def test_timm_parity_with_unit_scale_bn():
    """Features equal to timm's with BN affines near 1 (the generic twin test scales them down)."""
    timm = pytest.importorskip('timm')
    reference = timm.create_model('swiftformer_xs')
    randomize_unit_bn_(reference)
    reference.eval()
    model = SwiftFormer('xs')
    load_backbone_from_timm(model, reference, timm_swiftformer_to_mmeff)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, actual = reference.forward_features(x), model(x)[0]
    diff = (expected - actual).abs().max().item()
    print(f'swiftformer_xs features vs timm: max |diff| = {diff:.3e} (scale {expected.abs().max():.2f})')
    assert diff <= 1e-5 * max(expected.abs().max().item(), 1)
