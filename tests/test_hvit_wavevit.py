"""Wave-ViT (arXiv 2207.04978): the Haar DWT/IDWT, wavelet attention, the pyramid."""
import io

import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.wavevit import HaarDWT, HaarIDWT, WaveletAttention

from helpers.hier_backbone import check_bad_size, check_forward_backward, check_pyramid, check_registries

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def test_haar_coefficients_by_hand():
    """On the 2x2 patch [[1, 2], [3, 4]]: LL = 10/2, LH = (1+2-3-4)/2, HL = (1-2+3-4)/2, HH = 0;
    a second channel (the patch x10) shows the sub-band-major layout [LL(c0), LL(c1), LH(c0), ...]."""
    patch = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x = torch.stack([patch, 10 * patch])[None]  # 1, 2, 2, 2
    bands = HaarDWT()(x).flatten()
    torch.testing.assert_close(bands, torch.tensor([5.0, 50.0, -2.0, -20.0, -1.0, -10.0, 0.0, 0.0]))
    # 2x2 blocks are transformed independently (stride 2): a 2x4 input gives 2 columns of coefficients
    wide = torch.tensor([[[[1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 0.0, 8.0]]]])
    torch.testing.assert_close(HaarDWT()(wide)[0, :, 0], torch.tensor([[5.0, 4.0], [-2.0, -4.0], [-1.0, -4.0],
                                                                        [0.0, 4.0]]))


def test_idwt_inverts_dwt():
    x = torch.randn(2, 6, 8, 12)
    torch.testing.assert_close(HaarIDWT()(HaarDWT()(x)), x, atol=1e-6, rtol=0)
    bands = torch.randn(2, 12, 3, 5)  # and the other way round: the transform is orthonormal
    torch.testing.assert_close(HaarDWT()(HaarIDWT()(bands)), bands, atol=1e-6, rtol=0)
    assert torch.allclose(HaarDWT()(x).square().sum(), x.square().sum())  # energy preserved


def test_wavelet_attention_shapes_and_key_count():
    """Keys/values come from the DWT map (H/2) embedded at stride sr: (H/2/sr) * (W/2/sr) keys."""
    attn = WaveletAttention(64, 2, sr_ratio=4).eval()
    seen = {}
    attn.kv.register_forward_hook(lambda m, i, o: seen.update(kv=o.shape))
    out = attn(torch.randn(2, 16 * 24, 64), (16, 24))
    assert out.shape == (2, 16 * 24, 64) and seen['kv'] == (2, 2 * 3, 128)


def test_wavelet_transforms_export_to_onnx():
    pytest.importorskip('onnx')

    class OnMap(torch.nn.Module):  # wavelet attention on an 8x8 map

        def __init__(self):
            super().__init__()
            self.attn = WaveletAttention(32, 2, sr_ratio=2)

        def forward(self, x):
            return self.attn(x, (8, 8))

    model, x, buffer = OnMap().eval(), torch.randn(1, 64, 32), io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (x, ), buffer, dynamo=False)
        expected = model(x).numpy()
    ort = pytest.importorskip('onnxruntime')
    session = ort.InferenceSession(buffer.getvalue(), providers=['CPUExecutionProvider'])
    (actual, ) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(actual - expected).max() < 1e-5


@pytest.mark.parametrize('size', [224, 160])
def test_forward_backward_wavevit_s(size):
    check_forward_backward(dict(type='WaveViT', arch='s', out_type='cls_token', drop_path_rate=0.1), size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['b', 'l'])
@pytest.mark.parametrize('size', [224, 160])
def test_forward_backward(arch, size):
    check_forward_backward(dict(type='WaveViT', arch=arch, out_type='cls_token'), size)


def test_pyramid():
    check_pyramid(dict(type='WaveViT', arch='s'), num_stages=4, size=64, strides=(4, 8, 16, 32))


def test_registries():
    check_registries(dict(type='WaveViT', arch='s', out_indices=(0, 1, 2, 3)))


def test_clear_errors():
    with pytest.raises(ValueError, match='out_indices must include'):
        check_registries(dict(type='WaveViT', arch='s', out_indices=(0, ), out_type='cls_token'))
    check_bad_size(dict(type='WaveViT', arch='s'), 100, 'multiples of 32')
    with pytest.raises(KeyError, match='WaveViT arch must be one of s, b, l'):
        check_registries(dict(type='WaveViT', arch='small'))
