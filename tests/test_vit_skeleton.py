"""The isotropic ViT skeleton: timm parity, size table, resolution changes, config errors."""
import pytest
import torch
import torch.nn.functional as F

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.cait import timm_cait_to_mmeff
from mmeff.models.backbones.vit_with_mixer import VIT_ARCHS, ViTWithMixer, timm_vit_to_mmeff
from mmeff.registry import CLS_MODELS, DET_MODELS

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


def build_classifier(arch: str, embed_dim: int, type: str = 'ViTWithMixer', **backbone) -> torch.nn.Module:
    return CLS_MODELS.build(
        dict(
            type='AuxLossImageClassifier',
            backbone=dict(type=type, arch=arch, **backbone),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=embed_dim))).eval()


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (random init leaves LayerScale ~0, which would hide mismatches)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if 'norm' in name and name.endswith('weight') else 0.05 * noise)


@pytest.mark.parametrize('timm_name, timm_kwargs, backbone, embed_dim, converter', [
    ('deit3_small_patch16_224', {}, dict(arch='small', init_values=1e-6), 384, timm_vit_to_mmeff),
    ('vit_tiny_patch16_224', dict(no_embed_class=True, init_values=1e-4), dict(arch='tiny'), 192, timm_vit_to_mmeff),
    ('cait_xxs24_224', {}, dict(type='CaiT', arch='xxs24'), 192, timm_cait_to_mmeff),
])
def test_timm_parity(timm_name, timm_kwargs, backbone, embed_dim, converter):
    timm = pytest.importorskip('timm')
    reference = timm.create_model(timm_name, pretrained=False, **timm_kwargs).eval()
    randomize_(reference)
    model = build_classifier(embed_dim=embed_dim, **backbone)
    model.load_state_dict(converter(reference.state_dict()), strict=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(images), model(images, mode='tensor')
    diff = (expected - actual).abs().max().item()
    print(f'{timm_name}: max |logit diff| = {diff:.3e} (logit scale {expected.abs().max():.2f})')
    assert diff <= 1e-5


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

