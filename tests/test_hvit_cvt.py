"""CvT (arXiv 2103.15808): parity with HF transformers' CvT, the pyramid, the convolutional projection."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.converters.hf_cvt import hf_cvt_to_mmeff
from mmeff.models.backbones.cvt import ConvAttention

from helpers.hier_backbone import check_bad_size, check_forward_backward, check_pyramid, check_registries
from helpers.timm_parity import build_mmeff, randomize_

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

# HF's CvtConfig for each arch (its defaults are CvT-13).
HF_ARCHS = {
    '13': dict(),
    '21': dict(depth=[1, 4, 16]),
    'w24': dict(embed_dim=[192, 768, 1024], num_heads=[3, 12, 16], depth=[2, 2, 20]),
}


def hf_logit_diff(arch: str) -> float:
    from transformers import CvtConfig, CvtForImageClassification
    reference = CvtForImageClassification(CvtConfig(num_labels=1000, **HF_ARCHS[arch])).eval()
    randomize_(reference)
    model = build_mmeff(f'hvit/cvt/cvt_{arch}_in1k-224.py')
    model.load_state_dict(hf_cvt_to_mmeff(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = reference(x).logits, model(x, mode='tensor')
    diff = (expected - actual).abs().max().item()
    print(f'CvT-{arch} vs HF CvtForImageClassification: max |logit diff| = {diff:.2e} '
          f'(logit scale {expected.abs().max().item():.2f})')
    return diff


def test_hf_parity_cvt_13():
    assert hf_logit_diff('13') <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['21', 'w24'])
def test_hf_parity(arch):
    assert hf_logit_diff(arch) <= 1e-5


@pytest.mark.parametrize('size', [224, 96])
def test_forward_backward_cvt_13(size):
    check_forward_backward(dict(type='CvT', arch='13', out_type='cls_token', drop_path_rate=0.1), size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['21', 'w24'])
@pytest.mark.parametrize('size', [224, 160])
def test_forward_backward(arch, size):
    check_forward_backward(dict(type='CvT', arch=arch), size)


def test_pyramid():
    check_pyramid(dict(type='CvT', arch='13'), num_stages=3, size=64, strides=(4, 8, 16))


def test_registries():
    check_registries(dict(type='CvT', arch='13', out_indices=(0, 1, 2)))


def test_clear_errors():
    with pytest.raises(ValueError, match='out_indices must include'):
        check_registries(dict(type='CvT', arch='13', out_indices=(0, ), out_type='cls_token'))
    check_bad_size(dict(type='CvT', arch='13'), 8, 'at least 16 px')
    with pytest.raises(KeyError, match='CvT arch must be one of 13, 21, w24'):
        check_registries(dict(type='CvT', arch='cvt13'))


def test_conv_projection_is_identity_gives_plain_attention():
    """With the depth-wise convs set to identity taps and stride 1, CvT's attention is ordinary
    multi-head attention (scaled by 1/sqrt(C), as the authors do) over the tokens, class token included."""
    C, heads, H, W = 32, 4, 5, 6
    attn = ConvAttention(C, heads, stride_kv=1, with_cls_token=True).eval()
    with torch.no_grad():
        for proj in (attn.conv_q, attn.conv_k, attn.conv_v):
            proj.conv.weight.zero_()
            proj.conv.weight[:, :, 1, 1] = 1
            proj.bn.running_var.fill_(1 - proj.bn.eps)  # BN divides by sqrt(var + eps) = 1
    x = torch.randn(2, 1 + H * W, C)
    with torch.no_grad():
        q, k, v = (lin(x).reshape(2, -1, heads, C // heads).transpose(1, 2) for lin in (attn.q, attn.k, attn.v))
        expected = attn.proj(((q @ k.transpose(-1, -2)) / C**0.5).softmax(-1).matmul(v).transpose(1, 2).reshape(
            2, -1, C))
        torch.testing.assert_close(attn(x, (H, W)), expected, atol=1e-5, rtol=1e-5)


def test_keys_and_values_are_subsampled_2x():
    """Stride-2 k/v projections: a 7x9 map gives 4*5 keys (+ the class token) to 7*9 (+1) queries."""
    attn = ConvAttention(16, 2, with_cls_token=True).eval()
    seen = {}
    attn.k.register_forward_hook(lambda m, i, o: seen.update(k=o.shape))
    attn.q.register_forward_hook(lambda m, i, o: seen.update(q=o.shape))
    attn(torch.randn(1, 1 + 63, 16), (7, 9))
    assert seen['q'][1] == 64 and seen['k'][1] == 1 + 20
