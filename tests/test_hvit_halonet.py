"""HaloNet (arXiv 2103.12731): halo attention from first principles, any size, the pyramid."""
import io

import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.halonet import HaloAttention

from helpers.hier_backbone import check_bad_size, check_forward_backward, check_pyramid, check_registries

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def global_attention_with_relative_positions(attn: HaloAttention, x: torch.Tensor) -> torch.Tensor:
    """Every (strided) query attends to every pixel; logits q.k * scale + q.(r_row[dy] + r_col[dx])."""
    B, C, H, W = x.shape
    heads, s = attn.num_heads, attn.stride
    offset = attn.block_size + attn.halo_size - 1  # index of offset 0 in the tables
    q = attn.q(x)[:, :, ::s, ::s]
    k, v = attn.kv(x).split([attn.qk_dim, attn.value_dim], dim=1)
    Hq, Wq = q.shape[-2:]
    q = q.reshape(B, heads, -1, Hq * Wq).transpose(-1, -2)  # B, heads, Nq, d
    k = k.reshape(B, heads, -1, H * W).transpose(-1, -2)
    v = v.reshape(B, heads, -1, H * W).transpose(-1, -2)
    qy, qx = torch.meshgrid(torch.arange(0, H, s), torch.arange(0, W, s), indexing='ij')
    ky, kx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    dy = ky.flatten()[None, :] - qy.flatten()[:, None] + offset  # Nq, N
    dx = kx.flatten()[None, :] - qx.flatten()[:, None] + offset
    rel = attn.rel_height[dy] + attn.rel_width[dx]  # Nq, N, d
    logits = q @ k.transpose(-1, -2) * attn.scale + torch.einsum('bhqd,qkd->bhqk', q, rel)
    out = logits.softmax(-1) @ v  # B, heads, Nq, d_v
    return out.transpose(-1, -2).reshape(B, attn.value_dim, Hq, Wq)


@pytest.mark.parametrize('stride', [1, 2])
def test_block_covering_the_image_is_global_attention(stride):
    """A 6x7 map inside one 8x8 block (+ halo): the padding and the halo beyond the border are masked,
    so halo attention is exactly global attention with relative position logits."""
    attn = HaloAttention(16, 24, num_heads=2, block_size=8, halo_size=3, stride=stride).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), global_attention_with_relative_positions(attn, x), atol=1e-5, rtol=1e-4)


def test_attention_is_local_to_the_block_and_halo():
    """Queries of block (0, 0) (rows/cols 0..7) see rows/cols -3..10 only."""
    attn = HaloAttention(8, 8, num_heads=2, block_size=8, halo_size=3).eval()
    x = torch.randn(1, 8, 32, 32)
    with torch.no_grad():
        out = attn(x)
        far, near = x.clone(), x.clone()
        far[..., 11:, 11:] += 1
        near[..., 10, 10] += 1
        assert torch.equal(attn(far)[..., :8, :8], out[..., :8, :8])
        assert not torch.allclose(attn(near)[..., :8, :8], out[..., :8, :8])


def test_any_size_and_strided_queries():
    attn = HaloAttention(16, 16, num_heads=4, stride=2).eval()
    assert attn(torch.randn(1, 16, 28, 13)).shape == (1, 16, 14, 7)


def test_halo_attention_exports_to_onnx():
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    attn, x, buffer = HaloAttention(16, 16, num_heads=2, stride=2).eval(), torch.randn(1, 16, 20, 28), io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(attn, (x, ), buffer, dynamo=False)
        expected = attn(x).numpy()
    session = ort.InferenceSession(buffer.getvalue(), providers=['CPUExecutionProvider'])
    (actual, ) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(actual - expected).max() < 1e-5


@pytest.mark.parametrize('size', [224, 256])
def test_forward_backward_halonet_h0(size):
    check_forward_backward(dict(type='HaloNet', arch='h0'), size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['h1', 'h2'])
@pytest.mark.parametrize('size', [224, 256])
def test_forward_backward(arch, size):
    check_forward_backward(dict(type='HaloNet', arch=arch), size)


def test_pyramid():
    check_pyramid(dict(type='HaloNet', arch='h0'), num_stages=4, size=96, strides=(4, 8, 16, 32))


def test_registries():
    check_registries(dict(type='HaloNet', arch='h0', out_indices=(0, 1, 2, 3)))


def test_clear_errors():
    check_bad_size(dict(type='HaloNet', arch='h0'), 100, 'multiples of 32')
    with pytest.raises(KeyError, match='HaloNet arch must be one of h0, h1, h2'):
        check_registries(dict(type='HaloNet', arch='h3'))
