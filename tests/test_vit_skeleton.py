"""The isotropic ViT skeleton (timm parity: tests/test_timm_twins.py): size table, resolution changes, config errors."""
import pytest
import torch
import torch.nn.functional as F

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.vit_with_mixer import VIT_ARCHS, ViTWithMixer
from mmeff.registry import CLS_MODELS, DET_MODELS

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def test_size_table_is_read_only_and_exact():
    with pytest.raises(TypeError):
        VIT_ARCHS['tiny']['embed_dim'] = 1
    expected = {'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12)}
    for name, (dim, depth, heads) in expected.items():
        size = VIT_ARCHS[name]
        assert (size['embed_dim'], size['depth'], size['num_heads']) == (dim, depth, heads)
    custom = ViTWithMixer(arch=dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0), img_size=32)
    assert custom.embed_dim == 64 and VIT_ARCHS['tiny']['embed_dim'] == 192


def test_registered_in_both_registries():
    assert CLS_MODELS.get('ViTWithMixer') is ViTWithMixer
    assert DET_MODELS.get('ViTWithMixer') is ViTWithMixer


def test_pos_embed_resized_when_loading_another_resolution():
    small = dict(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)
    src = ViTWithMixer(arch=small, img_size=224)
    src.init_weights()
    dst = ViTWithMixer(arch=small, img_size=384)
    dst.load_state_dict(src.state_dict())
    grid = src.pos_embed.detach().reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(24, 24), mode='bicubic', align_corners=False)
    expected = expected.flatten(2).transpose(1, 2)
    diff = (dst.pos_embed.detach() - expected).abs().max().item()
    print(f'pos_embed 14x14 -> 24x24: max diff to bicubic = {diff:.2e}')
    assert dst.pos_embed.shape == (1, 576, 32) and diff < 1e-6
    out = dst(torch.randn(1, 3, 384, 384))[0]
    assert out.shape == (1, 32) and torch.isfinite(out).all()


def test_invalid_sizes_name_the_valid_ones():
    with pytest.raises(ValueError, match='224 and 240'):
        ViTWithMixer(img_size=230)
    model = ViTWithMixer(arch=dict(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0), img_size=64)
    with pytest.raises(ValueError, match='48 and 64'):
        model(torch.randn(1, 3, 50, 64))


def test_unknown_parts_list_the_known_ones():
    with pytest.raises(KeyError, match='SoftmaxAttention'):
        ViTWithMixer(img_size=32, mixer=dict(type='NoSuchAttention'))
    with pytest.raises(KeyError, match="'tiny', 'small', 'base'|tiny, small, base"):
        ViTWithMixer(arch='huge')


def test_other_input_size_uses_interpolated_pos_embed():
    model = ViTWithMixer(arch=dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0), img_size=64)
    out = model(torch.randn(2, 3, 96, 80))[0]
    assert out.shape == (2, 32) and torch.isfinite(out).all()


def test_aux_losses_are_returned_by_the_forward_pass_not_kept_on_modules():
    model = ViTWithMixer(arch=dict(embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0), img_size=64,
                         mlp=dict(type='SwitchMlp', num_experts=2),
                         reducers=[dict(type='DynamicViTPredictor', keep_ratio=0.5, layer=1)]).train()
    x = torch.randn(2, 3, 64, 64)
    feats, aux_losses = model(x, return_aux_losses=True)
    assert feats[0].shape == (2, 32) and set(aux_losses) == {'SwitchMlp', 'DynamicViTPredictor'}
    sum(aux_losses.values()).backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    assert model.reducers['1'].score[0].weight.grad.abs().sum() > 0
    leftovers = [name for name, m in model.named_modules() if hasattr(m, 'aux_loss') or hasattr(m, 'qk')]
    assert not leftovers, f'per-forward results stored on modules: {leftovers}'
    assert isinstance(model.eval()(x), tuple) and len(model(x)) == 1
