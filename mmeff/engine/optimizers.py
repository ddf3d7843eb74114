"""Optimizer wrapper constructors: RT-DETR's weight decay, and parameter groups for shared modules.

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069 (Sec. 5.1).
"""
from typing import List, Optional

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from torch.nn import GroupNorm, LayerNorm
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from mmeff.registry import CLS_OPTIM_WRAPPER_CONSTRUCTORS, DET_OPTIM_WRAPPER_CONSTRUCTORS

NORM_LAYERS = (_BatchNorm, _InstanceNorm, GroupNorm, LayerNorm)


class GroupFixingConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, then :meth:`fix_groups` once on all the groups it made
    (mmengine's ``add_params`` recurses into the submodules, each call with a ``prefix``)."""

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[int] = None) -> None:
        super().add_params(params, module, prefix, is_dcn_module)
        if not prefix:
            self.fix_groups(params, module)

    def fix_groups(self, params: List[dict], module: nn.Module) -> None:
        raise NotImplementedError


@DET_OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NoDecayNormBiasConstructor(GroupFixingConstructor):
    """mmengine's default constructor, then weight decay 0 on every norm parameter and bias.

    mmengine skips ``norm_decay_mult`` / ``bias_decay_mult`` for the parameters that a
    ``paramwise_cfg.custom_keys`` entry matched, so the backbone (matched for its lower learning
    rate) would keep decay on its trainable norms (R18/R34), which the official recipe excludes.
    Biases are matched by name (``*bias``), as the official regular expressions do, so attention's
    ``in_proj_bias`` is included. Select it with ``optim_wrapper.constructor``; it needs a
    non-empty ``paramwise_cfg`` (without one mmengine builds a single parameter group).
    """

    def fix_groups(self, params: List[dict], module: nn.Module) -> None:
        no_decay = {
            id(param)
            for child in module.modules() for name, param in child.named_parameters(recurse=False)
            if isinstance(child, NORM_LAYERS) or name.endswith('bias')
        }
        for group in params:
            if any(id(param) in no_decay for param in group['params']):
                group['weight_decay'] = 0.0


@CLS_OPTIM_WRAPPER_CONSTRUCTORS.register_module()
@DET_OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SharedModuleConstructor(GroupFixingConstructor):
    """mmengine's default constructor for models that register one module under several parents
    (CoaT: a scale's convolutional position encoding belongs to the backbone and to each serial block).

    With a ``paramwise_cfg``, mmengine walks the module tree and gives a shared parameter a group
    under every parent, which torch refuses ("some parameters appear in more than one parameter
    group"); here each parameter keeps only its first group, under its first name.
    """

    def fix_groups(self, params: List[dict], module: nn.Module) -> None:
        seen = set()
        for group in params:
            group['params'] = [p for p in group['params'] if id(p) not in seen and not seen.add(id(p))]
        params[:] = [group for group in params if group['params']]
