"""EfficientMod backbone: the modulation block against its definition, pyramid, registries, errors."""
import pytest
import torch
import torch.nn.functional as F

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.efficientmod import EfficientMod, EfficientModBlock, EfficientModulation
from mmeff.registry import CLS_MODELS, DET_MODELS


@pytest.mark.parametrize('expansion', [1, 4])
def test_modulation_definition(expansion):
    """y = p(ctx(x) (repeated r times along channels) * v(x)), ctx(x) = g(GELU(DWConv(f(x)))),
    v(x) = GELU(W_v x) for r > 1 and W_v x for r = 1; written position by position, channels first."""
    torch.manual_seed(0)
    C, H, W, k = 6, 5, 4, 7
    mod = EfficientModulation(C, expansion, kernel_size=k)
    x = torch.randn(1, H, W, C)
    out = mod(x)[0]  # H, W, C

    f = mod.ctx.f(x)[0].permute(2, 0, 1)  # C, H, W
    padded = F.pad(f, [k // 2] * 4)
    conv = torch.empty_like(f)
    for c in range(C):  # depth-wise: each channel with its own k x k kernel, zero padding
        for i in range(H):
            for j in range(W):
                window = padded[c, i:i + k, j:j + k]
                conv[c, i, j] = (window * mod.ctx.dwconv.weight[c, 0]).sum() + mod.ctx.dwconv.bias[c]
    ctx = mod.ctx.g(F.gelu(conv).permute(1, 2, 0))  # H, W, C
    v = mod.v(x[0])
    if expansion > 1:
        v = F.gelu(v)
    tiled = torch.cat([ctx] * expansion, dim=-1)  # channel c * r + ... sees ctx channel c mod C
    expected = mod.proj(v * tiled)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_block_is_residual_with_layer_scale():
    torch.manual_seed(0)
    block = EfficientModBlock(8, 6, layer_scale_init_value=0.5)
    x = torch.randn(2, 4, 4, 8)
    expected = x + 0.5 * block.modulation(block.norm(x))
    torch.testing.assert_close(block(x), expected)


def check_pyramid(arch, size):
    model = EfficientMod(arch, out_indices=(0, 1, 2, 3), drop_path_rate=0.1)
    dims = EfficientMod.arch_zoo[arch]['embed_dims']
    x = torch.randn(1, 3, *size, requires_grad=True)
    outs = model(x)
    assert [o.shape for o in outs] == [(1, c, size[0] // s, size[1] // s) for c, s in zip(dims, (4, 8, 16, 32))]
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('size', [(224, 224), (128, 192)])
def test_xxs_pyramid_forward_backward(size):
    check_pyramid('xxs', size)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['xs', 's'])
@pytest.mark.parametrize('size', [(224, 224), (256, 160)])
def test_pyramid_forward_backward(arch, size):
    check_pyramid(arch, size)


def test_block_layout():
    """Stages 3 and 4 close with attention blocks; modulation blocks alternate r = 1 and r > 1."""
    model = EfficientMod('s')
    assert [len(s.blocks) for s in model.stages] == [4, 4, 8, 4]
    assert [len(s.attn_blocks) for s in model.stages] == [0, 0, 4, 4]
    assert [b.modulation.expansion for b in model.stages[0].blocks] == [1, 6, 1, 6]
    # heads keep >= 32 channels: the 144-wide stage attends in 8 x 32 = 256 channels
    assert model.stages[2].attn_blocks[0].mixer.qkv.out_features == 3 * 256


def test_registries():
    cfg = dict(type='EfficientMod', arch='xxs', out_indices=(0, 3))
    assert isinstance(CLS_MODELS.build(cfg), EfficientMod)
    assert isinstance(DET_MODELS.build(cfg), EfficientMod)


def test_clear_errors():
    model = EfficientMod('xxs')
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.randn(1, 3, 224, 240))
    with pytest.raises(KeyError, match='EfficientMod arch must be one of xxs, xs, s'):
        EfficientMod('m')
    with pytest.raises(ValueError, match='out_indices'):
        EfficientMod('xxs', out_indices=())
