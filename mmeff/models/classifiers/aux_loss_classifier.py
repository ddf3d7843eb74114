"""An image classifier that adds the auxiliary losses its backbone returns to the head's loss.

Token-sequence methods and mixtures of experts train with extra objectives (DynamicViT's keep-ratio
loss, Switch Transformer's load-balancing loss, A-ViT's ponder loss). Their parts hand the losses on
through the forward pass (``TokenState.aux_losses``) and the backbone returns them when asked; this
classifier asks and adds them to the head's loss.
"""
from typing import List

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.structures import DataSample

from mmeff.registry import CLS_MODELS


@CLS_MODELS.register_module()
class AuxLossImageClassifier(ImageClassifier):
    """``ImageClassifier`` whose training loss also holds the backbone's auxiliary losses.

    A backbone with auxiliary losses declares ``has_aux_losses = True`` and returns
    ``(features, {part name: loss})`` from ``forward(x, return_aux_losses=True)`` (``ViTWithMixer``,
    ``CaiT``); each loss enters the loss dict as ``loss_aux_<part name>``. With any other backbone
    this is ``ImageClassifier``. Used by the *Which Transformer to Favor* configs
    (https://arxiv.org/abs/2308.09372).
    """

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        if getattr(self.backbone, 'has_aux_losses', False):  # backbones of other libraries declare nothing
            feats, aux_losses = self.backbone(inputs, return_aux_losses=True)
        else:
            feats, aux_losses = self.backbone(inputs), {}
        if self.with_neck:
            feats = self.neck(feats)
        losses = self.head.loss(feats, data_samples)
        losses.update({f'loss_aux_{name}': loss for name, loss in aux_losses.items()})
        return losses
