"""An image classifier that adds the auxiliary losses of its backbone's parts to the head's loss.

Token-sequence methods and mixtures of experts train with extra objectives (DynamicViT's keep-ratio
loss, Switch Transformer's load-balancing loss, A-ViT's ponder loss). Their parts store the last
value in ``aux_loss``; this classifier collects them after the forward pass.
"""
from typing import Dict, List

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.structures import DataSample
from torch import nn

from mmeff.registry import CLS_MODELS


def collect_aux_losses(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Sum the ``aux_loss`` of ``model``'s submodules per class: ``{'loss_aux_<Class>': tensor}``."""
    losses: Dict[str, torch.Tensor] = {}
    for module in model.modules():
        value = getattr(module, 'aux_loss', None)
        if isinstance(value, torch.Tensor):
            key = f'loss_aux_{type(module).__name__}'
            losses[key] = losses[key] + value if key in losses else value
    return losses


@CLS_MODELS.register_module()
class AuxLossImageClassifier(ImageClassifier):
    """``ImageClassifier`` whose training loss also holds the backbone's auxiliary losses.

    Used by the *Which Transformer to Favor* configs (https://arxiv.org/abs/2308.09372); equal to
    ``ImageClassifier`` for backbones without auxiliary losses.
    """

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        losses = self.head.loss(self.extract_feat(inputs), data_samples)
        losses.update(collect_aux_losses(self.backbone))
        return losses
