"""One interface, every backbone: the contract of mmeff's backbones (``backbones/base.py``), checked on
every backbone mmeff registers, as timm's tests/test_models.py runs over ``list_models()``.

The backbones come from the registry (mmeff registers them in MMDetection's and MMPretrain's), so a new
one fails ``test_every_registered_backbone_is_covered`` until it is listed in ``SPECS`` (how to build it
and feed it) or in ``COVERED_ELSEWHERE`` (with the reason). Default suite: the smallest size of each
(the first of its size table) at a small input; every size behind ``slow``.
"""
import copy
import dataclasses
import functools
import inspect
from typing import Dict, List, Mapping, Optional, Tuple

import pytest
import torch
from torch import nn

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.layers.reparam import Reparameterizable, switch_to_deploy
from mmeff.registry import CLS_MODELS, DET_MODELS

from helpers.unit_bn import randomize_unit_bn_

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')


@dataclasses.dataclass
class Spec:
    """How the interface tests build and feed one backbone."""
    input_size: int = 64  # the side of the square test input (a multiple of 32)
    kwargs: Mapping = dataclasses.field(default_factory=dict)  # for every size
    size_key: str = 'arch'  # the argument naming a size of ``arch_zoo``
    sizes: Optional[Mapping[str, Mapping]] = None  # sizes as arguments, for a class without a size table
    pooled: Optional[Mapping] = None  # arguments of its vector output (class token / pooled), if it has one
    deploy: bool = False  # ``switch_to_deploy`` fuses blocks of it (re-parameterization, BN folding)


SPECS: Dict[str, Spec] = {
    'CoaT': Spec(pooled=dict(out_type='cls_token')),
    'CvT': Spec(pooled=dict(out_type='cls_token')),
    'EfficientFormerV2': Spec(),
    'EfficientMod': Spec(),
    'EfficientViTMIT': Spec(),
    'FastViT': Spec(deploy=True),
    'FocalNet': Spec(),
    'HGNetv2': Spec(),
    'HaloNet': Spec(),
    'HiViTPyramid': Spec(kwargs=dict(img_size=64), pooled=dict(out_type='avg_featmap')),  # bias of the grid
    'NextViT': Spec(deploy=True),
    'PResNet': Spec(size_key='depth'),
    'ResT': Spec(),
    'SwiftFormer': Spec(),
    'WaveViT': Spec(pooled=dict(out_type='cls_token')),
    # MMPretrain's models, made lean; Swin pads maps smaller than a window only when asked
    'LeanSwinTransformer': Spec(kwargs=dict(pad_small_map=True)),
    'SwinTransformerV2Strict': Spec(kwargs=dict(img_size=64, window_size=7, pad_small_map=True)),
    'STViTSwin': Spec(input_size=224),  # whole 7x7 windows on its semantic-token stage (stride 16)
    'LeanMlpMixer': Spec(kwargs=dict(img_size=64, patch_size=16)),  # its token MLPs are sized for one grid
    # XCiT has no size table in MMPretrain: the sizes of configs/hvit/xcit
    'LeanXCiT': Spec(kwargs=dict(out_type='featmap'), pooled=dict(out_type='cls_token'), sizes={
        'nano_12': dict(embed_dims=128, depth=12, num_heads=4),
        'tiny_12': dict(embed_dims=192, depth=12, num_heads=4),
        'tiny_24': dict(embed_dims=192, depth=24, num_heads=4),
        'small_12': dict(embed_dims=384, depth=12, num_heads=8),
        'small_24': dict(embed_dims=384, depth=24, num_heads=8),
        'medium_24': dict(embed_dims=512, depth=24, num_heads=8)}),
}
COVERED_ELSEWHERE = {
    'ViTWithMixer': 'the isotropic ViT of the paper: one stride-16 map or a class token, its contract (mixers, '
                    'reducers, sizes, timm parity) in tests/test_vit_skeleton.py, test_vit_variants.py, '
                    'test_vit_token_reducers.py and test_timm_twins.py',
    'CaiT': 'a ViTWithMixer with class-attention blocks: tests/test_vit_variants.py and test_timm_twins.py',
}
NO_FREEZING = {
    'CoaT': 'its parallel blocks belong to scales 2-4 at once: the first k stages are no separable modules',
    'HiViTPyramid': "the stages are slices of MMPretrain's one flat block list, the position embedding belongs "
                    'to the whole model',
    'LeanSwinTransformer': "MMPretrain's own frozen_stages (not mmeff's freeze_at)",
    'SwinTransformerV2Strict': "MMPretrain's own frozen_stages (not mmeff's freeze_at)",
    'STViTSwin': "MMPretrain's own frozen_stages (not mmeff's freeze_at)",
    'LeanMlpMixer': 'MMPretrain has no freezing for it',
    'LeanXCiT': "MMPretrain's own frozen_stages (not mmeff's freeze_at)",
}


def registered_backbones() -> List[str]:
    """Every class mmeff registered in both model registries: ``register_backbone``'s mark."""
    return sorted(name for name, cls in CLS_MODELS.module_dict.items()
                  if cls.__module__.startswith('mmeff.') and DET_MODELS.module_dict.get(name) is cls)


def size_table(name: str) -> Dict[str, Mapping]:
    """The sizes of a backbone as constructor arguments, smallest first (aliases of one size once)."""
    spec = SPECS[name]
    if spec.sizes is not None:
        return dict(spec.sizes)
    sizes, seen = {}, []
    for size, settings in CLS_MODELS.get(name).arch_zoo.items():
        if dict(settings) not in seen:
            seen.append(dict(settings))
            sizes[str(size)] = {spec.size_key: size}
    return sizes


def smallest(name: str) -> Mapping:
    return next(iter(size_table(name).values()))


def build(name: str, size: Optional[Mapping] = None, meta: bool = False, **kwargs) -> nn.Module:
    """The backbone (of its smallest size by default); ``meta`` builds without memory where the model allows."""
    cfg = dict(SPECS[name].kwargs, type=name, **(smallest(name) if size is None else size))
    cfg.update(kwargs)
    if meta:
        try:
            with torch.device('meta'):
                return CLS_MODELS.build(cfg)
        except RuntimeError as e:  # MMPretrain's Swin reads its drop-path rates with .item()
            if 'meta' not in str(e):
                raise
    torch.manual_seed(0)
    return CLS_MODELS.build(cfg)


@functools.lru_cache(maxsize=None)
def num_stages(name: str) -> int:
    return build(name, meta=True).num_stages


@functools.lru_cache(maxsize=None)
def every_stage_features(name: str) -> Tuple[List[int], List[Optional[int]]]:
    """``out_channels``, ``out_strides`` with every stage out."""
    model = build(name, meta=True, out_indices=tuple(range(num_stages(name))))
    return model.out_channels, model.out_strides


def check_outputs(name: str, model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``out_channels`` and ``out_strides`` describe the outputs: channels in dim 1, the stride of a map
    exact, None for a vector or token sequence."""
    assert model.eval() is model
    with torch.no_grad():
        outs = model(x)
    assert isinstance(outs, tuple) and len(outs) == len(model.out_indices)
    assert len(model.out_channels) == len(model.out_strides) == len(outs)
    for out, channels, stride in zip(outs, model.out_channels, model.out_strides):
        assert out.shape[0] == x.shape[0] and out.shape[1] == channels, (name, tuple(out.shape), channels)
        if out.dim() == 4:
            assert stride is not None and out.shape[2:] == (x.shape[2] // stride, x.shape[3] // stride), \
                (name, tuple(out.shape), stride)
        else:
            assert stride is None, (name, tuple(out.shape), stride)
    return outs


BACKBONES = [name for name in registered_backbones() if name in SPECS]
FREEZABLE = [name for name in BACKBONES if 'freeze_at' in inspect.signature(CLS_MODELS.get(name)).parameters]
POOLED = [name for name in BACKBONES if SPECS[name].pooled is not None]
WITH_TABLE = [name for name in BACKBONES if SPECS[name].sizes is None]
ALL_SIZES = [pytest.param(name, size, marks=pytest.mark.slow, id=f'{name}-{size}')
             for name in BACKBONES for size in size_table(name)]


def test_every_registered_backbone_is_covered():
    registered = set(registered_backbones())
    assert registered == set(SPECS) | set(COVERED_ELSEWHERE), \
        f'not listed here: {sorted(registered - set(SPECS) - set(COVERED_ELSEWHERE))}; ' \
        f'listed but not registered: {sorted(set(SPECS) | set(COVERED_ELSEWHERE) - registered)}'
    assert not set(SPECS) & set(COVERED_ELSEWHERE)
    assert set(BACKBONES) - set(FREEZABLE) == set(NO_FREEZING)


@pytest.mark.parametrize('name', BACKBONES)
def test_outputs_match_out_channels_and_strides(name):
    """Every stage out: one output each, as ``out_channels``/``out_strides`` say; ``train()`` returns self."""
    model = build(name, out_indices=tuple(range(num_stages(name))))
    assert model.train() is model and model.training
    size = SPECS[name].input_size
    check_outputs(name, model, torch.rand(1, 3, size, size))


@pytest.mark.parametrize('name', BACKBONES)
def test_out_indices_subset(name):
    """A subset of the stages (given with a negative index) returns that subset, in stage order."""
    n = num_stages(name)
    model = build(name, out_indices=(-1, 0))
    assert tuple(model.out_indices) == (0, n - 1)
    channels, strides = every_stage_features(name)
    assert model.out_channels == [channels[0], channels[-1]] and model.out_strides == [strides[0], strides[-1]]
    size = SPECS[name].input_size
    check_outputs(name, model, torch.rand(1, 3, size, size))


@pytest.mark.parametrize('name', BACKBONES)
def test_invalid_out_indices_raise_one_error(name):
    n = num_stages(name)
    for invalid in ((n, ), (-n - 1, ), ()):
        with pytest.raises(ValueError, match=rf'{name} out_indices must index its {n} stages 0\.\.{n - 1} '):
            build(name, meta=True, out_indices=invalid)


@pytest.mark.parametrize('name', WITH_TABLE)
def test_unknown_size_lists_the_sizes(name):
    key = SPECS[name].size_key
    listed = ', '.join(str(size) for size in CLS_MODELS.get(name).arch_zoo)
    with pytest.raises(KeyError, match=f'{name} {key} must be one of {listed} or a dict'):
        build(name, size={key: 'no_such_size'}, meta=True)


@pytest.mark.parametrize('name', POOLED)
def test_vector_output_has_no_stride(name):
    model = build(name, **SPECS[name].pooled)
    size = SPECS[name].input_size
    (out, ) = check_outputs(name, model, torch.rand(2, 3, size, size))[-1:]
    assert out.dim() == 2 and model.out_strides[-1] is None


@pytest.mark.parametrize('name', FREEZABLE)
def test_freezing(name):
    """freeze_at=1: the stem and stage 0 lose their gradients and stay in eval mode through ``train()``;
    freeze_norm leaves no trainable BatchNorm; freeze_at beyond the stages is refused."""
    model = build(name, meta=True, freeze_at=1, freeze_norm=True)
    frozen = [*model.stem_parts(), *model.stage_parts(0)]
    assert frozen and model.train() is model
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert not any(m.training for m in module.modules())
    trainable = [p for m in model.stage_parts(1) for p in m.parameters()]
    assert trainable and all(p.requires_grad for p in trainable) and model.stage_parts(1)[-1].training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ValueError, match='freeze_at must be -1'):
        build(name, meta=True, freeze_at=model.num_stages + 1)


@pytest.mark.parametrize('name', BACKBONES)
def test_deploy_fusion_is_declared(name):
    """Whether ``switch_to_deploy`` changes the backbone (so that the next test checks its outputs)."""
    model = build(name, meta=True).eval()
    before = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fuses = any(isinstance(m, Reparameterizable) for m in model.modules()) and \
        {k: tuple(v.shape) for k, v in switch_to_deploy(model).state_dict().items()} != before
    assert fuses == SPECS[name].deploy, f'{name}: set Spec(deploy={fuses})'


@pytest.mark.parametrize('name', [name for name in BACKBONES if SPECS[name].deploy])
def test_deploy_fusion_keeps_outputs(name):
    """In float64, so that the check is exact (a deep float32 model amplifies rounding differences)."""
    model = build(name, out_indices=tuple(range(num_stages(name))))
    randomize_unit_bn_(model)
    model.eval().double()
    size = SPECS[name].input_size
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        fused = switch_to_deploy(copy.deepcopy(model))
        actual = fused(x)
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('name,size', ALL_SIZES)
def test_every_size(name, size):
    model = build(name, size=size_table(name)[size], out_indices=tuple(range(num_stages(name))))
    side = SPECS[name].input_size
    check_outputs(name, model, torch.rand(1, 3, side, side))


@pytest.mark.slow
@pytest.mark.parametrize('name', BACKBONES)
def test_size_table_lists_the_smallest_first(name):
    counts = {size: sum(p.numel() for p in build(name, size=args, meta=True).parameters())
              for size, args in size_table(name).items()}
    assert next(iter(counts.values())) == min(counts.values()), counts
