"""Structural re-parameterization: blocks trained with parallel branches that fuse for inference.

RepVGG (https://arxiv.org/abs/2101.03697) and its descendants (MobileOne, FastViT's RepMixer) train
with several branches and run as one conv with the same outputs. Such a block subclasses
:class:`Reparameterizable`; :func:`switch_to_deploy` fuses every one inside a model (export,
benchmarks).
"""
from mmcv.cnn import fuse_conv_bn
from mmdet.models.layers import FrozenBatchNorm2d
from torch import nn


class Reparameterizable:
    """Mixin of a block that fuses its training-time branches in ``switch_to_deploy``."""

    def switch_to_deploy(self) -> None:
        """Fuse in place; the outputs stay the same (up to float rounding)."""
        raise NotImplementedError


def switch_to_deploy(module: nn.Module, fold_batchnorm: bool = False) -> nn.Module:
    """Fuse every re-parameterizable block inside ``module`` (in place) and return it.

    Args:
        fold_batchnorm: then also fold every remaining eval-mode BatchNorm into the conv before it
            (mmcv's ``fuse_conv_bn``, what mmdet's ``--fuse-conv-bn`` does): one op less per conv
            in eager PyTorch. Export does not need it (ONNX Runtime and TensorRT fold it themselves).
    """
    for m in list(module.modules()):
        if isinstance(m, Reparameterizable):
            m.switch_to_deploy()
    if fold_batchnorm:
        if module.training:
            raise ValueError('fold_batchnorm folds the running statistics: call model.eval() first')
        fuse_conv_bn(_as_batchnorm(module))
    return module


def _as_batchnorm(module: nn.Module) -> nn.Module:
    """Replace mmdet's ``FrozenBatchNorm2d`` (the frozen R50/R101 backbones) by the eval-mode
    ``BatchNorm2d`` it equals, the only kind mmcv's ``fuse_conv_bn`` folds."""
    for name, child in module.named_children():
        if isinstance(child, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(child.num_features, child.eps).eval()
            for key in ('weight', 'bias', 'running_mean', 'running_var'):
                getattr(bn, key).data.copy_(getattr(child, key))
            setattr(module, name, bn)
        else:
            _as_batchnorm(child)
    return module
