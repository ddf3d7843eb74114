"""ResT (arXiv 2105.13677): EMSA against plain attention, the pyramid, sizes."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.rest import EMSA

from helpers.hier_backbone import check_bad_size, check_forward_backward, check_pyramid, check_registries

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def test_emsa_without_reduction_and_transform_is_multi_head_attention():
    """Reduction ratio 1, no head-mixing conv and no instance norm: EMSA == torch's multi-head attention."""
    C, heads = 32, 4
    emsa = EMSA(C, heads, sr_ratio=1, apply_transform=False).eval()
    reference = torch.nn.MultiheadAttention(C, heads, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([emsa.q.weight, emsa.kv.weight]))
        reference.in_proj_bias.copy_(torch.cat([emsa.q.bias, emsa.kv.bias]))
        reference.out_proj.load_state_dict(emsa.proj.state_dict())
        x = torch.randn(2, 5 * 7, C)
        torch.testing.assert_close(emsa(x, (5, 7)), reference(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_emsa_reduces_keys_and_normalizes_attention_per_head():
    """Reduction ratio s: ceil(H/s) x ceil(W/s) keys; with the transform, each head's attention map is
    instance-normalized (zero mean, unit variance over queries x keys) instead of row-stochastic."""
    emsa = EMSA(64, 4, sr_ratio=4).eval()
    seen = {}
    emsa.kv.register_forward_hook(lambda m, i, o: seen.update(kv=o.shape))
    emsa.transform_norm.register_forward_hook(lambda m, i, o: seen.update(softmax=i[0], attn=o))
    out = emsa(torch.randn(2, 14 * 10, 64), (14, 10))
    assert out.shape == (2, 140, 64) and seen['kv'] == (2, 4 * 3, 128)
    softmax, attn = seen['softmax'], seen['attn']  # B, heads, N, n
    torch.testing.assert_close(softmax.sum(-1), torch.ones(2, 4, 140))
    mean, var = softmax.mean((-1, -2), keepdim=True), softmax.var((-1, -2), unbiased=False, keepdim=True)
    torch.testing.assert_close(attn, (softmax - mean) / (var + 1e-5).sqrt(), atol=1e-5, rtol=1e-4)


def test_single_head_stage_has_no_transform():
    assert not EMSA(64, 1, sr_ratio=8).apply_transform


@pytest.mark.parametrize('size', [224, 96])
def test_forward_backward_rest_lite(size):
    check_forward_backward(dict(type='ResT', arch='lite', drop_path_rate=0.1), size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['small', 'base', 'large'])
@pytest.mark.parametrize('size', [224, 160])
def test_forward_backward(arch, size):
    check_forward_backward(dict(type='ResT', arch=arch), size)


def test_pyramid():
    check_pyramid(dict(type='ResT', arch='lite'), num_stages=4, size=64, strides=(4, 8, 16, 32))


def test_registries():
    check_registries(dict(type='ResT', arch='lite', out_indices=(0, 1, 2, 3)))


def test_clear_errors():
    check_bad_size(dict(type='ResT', arch='lite'), 16, 'at least 32 px')
    with pytest.raises(KeyError, match='ResT arch must be one of lite, small, base, large'):
        check_registries(dict(type='ResT', arch='tiny'))
