"""CoaT (arXiv 2104.06399): shapes, strides, training step, both outputs, input checks."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.coat import CoaT, ConvRelPosEnc, FactorAttnConvRelPosEnc

from helpers.hvit_checks import check_forward_backward, check_pyramid, check_registries

SLOW = pytest.mark.slow
ARCHS = ['tiny', pytest.param('mini', marks=SLOW), pytest.param('small', marks=SLOW), 'lite_tiny',
         pytest.param('lite_mini', marks=SLOW), pytest.param('lite_small', marks=SLOW)]


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [(224, 224), (128, 96)])
def test_forward_backward(arch, size):
    check_forward_backward(CoaT(arch, out_indices=(0, 1, 2, 3)), size)


@pytest.mark.parametrize('arch', ['tiny', 'lite_tiny'])
def test_classifier_feature_trains(arch):
    model = CoaT(arch, out_type='cls_token')
    check_forward_backward(model, (64, 96))
    (feature, ) = model(torch.rand(2, 3, 64, 96))
    assert feature.shape == (2, CoaT.arch_zoo[arch]['embed_dims'][-1])


@pytest.mark.parametrize('arch', ARCHS)
def test_pyramid_shapes_and_strides(arch):
    check_pyramid(CoaT(arch).eval(), (96, 160), list(CoaT.arch_zoo[arch]['embed_dims']))


def test_factorized_attention_matches_its_definition():
    """q (softmax_N(k)^T v) / sqrt(d) + crpe, with the crpe switched off (zero kernels)."""
    attn = FactorAttnConvRelPosEnc(32, 4, ConvRelPosEnc(8, {3: 4})).eval()
    torch.nn.init.zeros_(attn.crpe.conv_list[0].weight)
    torch.nn.init.zeros_(attn.crpe.conv_list[0].bias)
    x = torch.randn(2, 1 + 16, 32)
    q, k, v = attn.qkv(x).reshape(2, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    expected = (q @ (k.softmax(dim=2).transpose(-1, -2) @ v)) / 8 ** 0.5
    torch.testing.assert_close(attn(x, (4, 4)), attn.proj(expected.transpose(1, 2).reshape(2, 17, 32)))


def test_registries():
    check_registries(dict(type='CoaT', arch='lite_tiny', out_indices=(1, 2, 3)))


def test_invalid_input_size_is_explained():
    with pytest.raises(ValueError, match='multiples of 32'):
        CoaT('lite_tiny')(torch.rand(1, 3, 224, 112 + 8))


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(KeyError, match='tiny, mini, small, lite_tiny'):
        CoaT('medium')


def test_the_in1k_recipe_builds_its_optimizer_despite_the_shared_position_encodings(mmpretrain_scope):
    """CoaT registers each scale's position encoding under the backbone and every serial block;
    mmengine's default constructor with the recipe's paramwise_cfg then puts those parameters in
    several groups, which torch refuses. SharedModuleConstructor keeps each in one group."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS

    from conftest import REPO
    cfg = Config.fromfile(osp.join(REPO, 'configs/hvit/coat/coat_tiny_in1k-224.py'))
    model = MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    grouped = [id(p) for group in optimizer.param_groups for p in group['params']]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    no_decay = {id(p) for group in optimizer.param_groups if group['weight_decay'] == 0 for p in group['params']}
    assert id(model.backbone.cpes[0].proj.bias) in no_decay  # the recipe's bias_decay_mult=0 still applies
    with pytest.raises(ValueError, match='more than one parameter group'):
        build_optim_wrapper(model, {k: v for k, v in cfg.optim_wrapper.items() if k != 'constructor'})
