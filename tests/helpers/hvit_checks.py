"""Checks shared by the hierarchical-backbone tests (tests/test_hvit_*.py)."""
import torch

from mmeff.registry import CLS_MODELS, DET_MODELS


def check_pyramid(backbone: torch.nn.Module, size, channels, strides=(4, 8, 16, 32)) -> None:
    """All ``out_indices`` of an eval-mode backbone: NCHW maps of ``channels`` at ``strides``."""
    h, w = size
    with torch.no_grad():
        outs = backbone(torch.rand(1, 3, h, w))
    assert len(outs) == len(channels)
    for out, c, s in zip(outs, channels, strides):
        assert tuple(out.shape) == (1, c, h // s, w // s), (tuple(out.shape), c, s)


def check_forward_backward(backbone: torch.nn.Module, size) -> None:
    """A training step at ``size`` reaches every parameter that takes part in the forward pass."""
    backbone.train()
    outs = backbone(torch.rand(2, 3, *size))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'


def check_registries(cfg: dict) -> None:
    """The backbone config builds from MMPretrain's and MMDetection's registries."""
    for registry in (CLS_MODELS, DET_MODELS):
        assert type(registry.build(dict(cfg))).__name__ == cfg['type']
