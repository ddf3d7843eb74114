"""Structural re-parameterization: blocks trained with parallel branches that fuse for inference.

RepVGG (https://arxiv.org/abs/2101.03697) and its descendants (MobileOne, FastViT's RepMixer) train
with several branches and run as one conv with the same outputs. Such a block subclasses
:class:`Reparameterizable`; :func:`switch_to_deploy` fuses every one inside a model (export,
benchmarks).
"""
from torch import nn


class Reparameterizable:
    """Mixin of a block that fuses its training-time branches in ``switch_to_deploy``."""

    def switch_to_deploy(self) -> None:
        """Fuse in place; the outputs stay the same (up to float rounding)."""
        raise NotImplementedError


def switch_to_deploy(module: nn.Module) -> nn.Module:
    """Fuse every re-parameterizable block inside ``module`` (in place) and return it."""
    for m in list(module.modules()):
        if isinstance(m, Reparameterizable):
            m.switch_to_deploy()
    return module
