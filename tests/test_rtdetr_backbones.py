"""RT-DETR backbones: PResNet (R18/34/50/101) and HGNetv2 (L/X/H).

The official checkpoint layout (every key and shape) is checked in test_rtdetr_encoder.py,
together with the encoder of each official model.
"""
import pytest
import torch
import torch.nn as nn
from mmdet.models.layers import FrozenBatchNorm2d

import mmeff  # noqa: F401  (registers the modules)
from mmeff.models.backbones.hgnetv2 import HGNetv2
from mmeff.models.backbones.presnet import PResNet
from mmeff.registry import CLS_MODELS, DET_MODELS


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_pyramid(model, x, expected_channels):
    outs = model(x)
    h, w = x.shape[-2:]
    assert [o.shape[1] for o in outs] == expected_channels
    for out, stride in zip(outs, (8, 16, 32)):
        assert out.shape[-2:] == (_ceil_div(h, stride), _ceil_div(w, stride)), (out.shape, stride)
    assert model.out_strides == [8, 16, 32]
    assert model.out_channels == expected_channels


# every depth on a non-square input; odd sizes (not multiples of 32) on the cheaper ones
@pytest.mark.parametrize('depth,channels,size', [
    (18, [128, 256, 512], (64, 64)), (18, [128, 256, 512], (100, 72)),
    (34, [128, 256, 512], (96, 160)), (50, [512, 1024, 2048], (96, 160)),
    (50, [512, 1024, 2048], (100, 72)), (101, [512, 1024, 2048], (64, 96))])
def test_presnet_shapes_and_strides(depth, channels, size):
    model = PResNet(depth=depth).eval()
    with torch.no_grad():
        _check_pyramid(model, torch.rand(1, 3, *size), channels)


@pytest.mark.parametrize('arch,size', [('L', (64, 64)), ('L', (100, 72)), ('X', (64, 96)),
                                       ('H', (64, 96))])
def test_hgnetv2_shapes_and_strides(arch, size):
    model = HGNetv2(arch=arch).eval()
    with torch.no_grad():
        _check_pyramid(model, torch.rand(1, 3, *size), [512, 1024, 2048])


def _norm_state(module: nn.Module):
    return {k: v.clone() for k, v in module.state_dict().items() if 'running' in k}


def _train_step(model: nn.Module) -> None:
    model.train()
    model.zero_grad()
    sum(o.mean() for o in model(torch.rand(2, 3, 64, 96))).backward()


@pytest.mark.parametrize('build', [lambda: PResNet(depth=50), lambda: HGNetv2(arch='L')],
                         ids=['PResNet-50', 'HGNetv2-L'])
def test_paper_freezing_stem_and_all_norms(build):
    """R50/R101 and L/X: stem frozen, every BN frozen (no stats update, no gradient)."""
    model = build()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert all(not p.requires_grad for p in model.stem.parameters())
    before = _norm_state(model)
    _train_step(model)
    after = _norm_state(model)
    max_diff = max((before[k] - after[k]).abs().max().item() for k in before)
    print(f'max change of frozen BN statistics after a train step: {max_diff}')
    assert max_diff == 0
    assert all(p.grad is None for p in model.stem.parameters())
    stage_grads = [p.grad for p in model.stages[0].parameters()]
    assert stage_grads and all(g is not None and g.abs().sum() > 0 for g in stage_grads)


def test_presnet18_trains_every_norm_by_default():
    model = PResNet(depth=18)
    assert all(p.requires_grad for p in model.parameters())
    before = _norm_state(model)
    _train_step(model)
    after = _norm_state(model)
    assert all((before[k] - after[k]).abs().max() > 0 for k in before if 'conv1.conv1_1' in k)


def test_freeze_at_keeps_frozen_stages_in_eval_mode():
    """With trainable BN, freeze_at=1 must still leave the stem's and stage 0's BN stats alone."""
    model = PResNet(depth=18, freeze_at=1, freeze_norm=False)
    frozen = [model.conv1, model.res_layers[0]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in model.res_layers[1:] for p in m.parameters())
    before = _norm_state(model)
    _train_step(model)
    after = _norm_state(model)
    frozen_keys = [k for k in before if k.startswith(('conv1.', 'res_layers.0.'))]
    trained_keys = [k for k in before if k.startswith('res_layers.1.')]
    assert frozen_keys and trained_keys
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)
    assert all(not torch.equal(before[k], after[k]) for k in trained_keys)
    assert not model.conv1.training and model.res_layers[1].training


def test_config_errors_are_explicit():
    with pytest.raises(KeyError, match='depth must be one of'):
        PResNet(depth=26)
    with pytest.raises(KeyError, match='arch must be one of'):
        HGNetv2(arch='B4')
    with pytest.raises(ValueError, match='freeze_at must be -1'):
        PResNet(depth=18, freeze_at=7)


@pytest.mark.parametrize('name', ['PResNet', 'HGNetv2'])
def test_registered_in_mmdet_and_mmpretrain(name):
    cls = {'PResNet': PResNet, 'HGNetv2': HGNetv2}[name]
    assert DET_MODELS.get(name) is cls
    assert CLS_MODELS.get(name) is cls
    cfg = dict(type=name, depth=18) if name == 'PResNet' else dict(type=name, arch='L')
    assert isinstance(DET_MODELS.build(cfg), cls)
