"""Checks every hierarchical backbone of configs/hvit passes: forward/backward, pyramid, registries."""
from typing import Sequence

import pytest
import torch

from mmeff.registry import CLS_MODELS, DET_MODELS


def check_forward_backward(backbone_cfg: dict, size: int, num_classes: int = 10) -> None:
    """A classifier on the backbone gives finite logits at ``size`` px and gradients to every parameter."""
    pooled = backbone_cfg.get('out_type') == 'cls_token'  # the backbone pools itself
    model = CLS_MODELS.build(
        dict(type='ImageClassifier', backbone=backbone_cfg, neck=None if pooled else dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=_last_channels(backbone_cfg))))
    model.train()
    logits = model(torch.randn(2, 3, size, size), mode='tensor')
    assert logits.shape == (2, num_classes) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing[:5]}'


def _last_channels(backbone_cfg: dict) -> int:
    with torch.device('meta'):
        return CLS_MODELS.build(backbone_cfg).out_channels[-1]


def check_pyramid(backbone_cfg: dict, num_stages: int, size: int, strides: Sequence[int]) -> None:
    """All out_indices: one NCHW map per stage at the given strides, channels as ``out_channels``."""
    backbone = CLS_MODELS.build(dict(backbone_cfg, out_indices=tuple(range(num_stages))))
    backbone.eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, size, size))
    assert len(outs) == num_stages
    assert list(backbone.out_strides) == list(strides)
    for out, channels, stride in zip(outs, backbone.out_channels, strides):
        assert out.shape == (1, channels, size // stride, size // stride), (out.shape, channels, stride)


def check_registries(backbone_cfg: dict) -> None:
    """The backbone builds from MMPretrain's and MMDetection's registries (meta device: no memory)."""
    with torch.device('meta'):
        for registry in (CLS_MODELS, DET_MODELS):
            assert type(registry.build(backbone_cfg)).__name__ == backbone_cfg['type']


def check_bad_size(backbone_cfg: dict, size: int, match: str) -> None:
    backbone = CLS_MODELS.build(backbone_cfg)
    backbone.eval()
    with pytest.raises(ValueError, match=match):
        backbone(torch.randn(1, 3, size, size))
