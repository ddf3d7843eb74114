"""RT-DETR's IoU-aware varifocal classification loss.

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069 (Sec. 4.3, uncertainty-minimal query selection); varifocal loss
from VarifocalNet, Zhang et al., CVPR 2021, https://arxiv.org/abs/2008.13367.
"""
from typing import Optional, Tuple

import torch.nn.functional as F
from mmdet.models.losses import QualityFocalLoss
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmeff.registry import DET_MODELS


@DET_MODELS.register_module()
class RTDETRVarifocalLoss(QualityFocalLoss):
    """Sigmoid BCE towards the IoU of the matched box, weighted as in varifocal loss.

    For class c of a query with target label y and IoU q (q = 0 for unmatched queries):
    ``t = q * [c == y]``, ``w = alpha * sigmoid(x).detach() ** gamma * (1 - [c == y]) + t``,
    ``loss = w * BCE(x, t)``, summed over queries and classes and divided by ``avg_factor`` (the
    number of GT boxes).

    Why a subclass of mmdet's ``QualityFocalLoss``: mmdet's DETR heads pass the ``(labels, IoU)``
    target to losses of that type; mmdet's ``VarifocalLoss`` takes a dense (N, C) target instead.
    Only the weighting differs from quality focal loss (``|q - p| ** beta`` there).

    Args:
        alpha (float): Weight of the negatives. Defaults to 0.75.
        gamma (float): Focusing exponent on the negatives. Defaults to 2.0.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Defaults to 1.0.
    """

    def __init__(self,
                 alpha: float = 0.75,
                 gamma: float = 2.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__(use_sigmoid=True, reduction=reduction, loss_weight=loss_weight)
        self.alpha = alpha
        self.gamma = gamma

    def forward(self,
                pred: Tensor,
                target: Tuple[Tensor, Tensor],
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """
        Args:
            pred (Tensor): (N, C) logits.
            target (tuple[Tensor, Tensor]): Labels (N,) with C for background, and the IoU (N,)
                of each query's box with its matched GT (0 where unmatched).
            weight (Tensor, optional): (N,) per-query weight.
            avg_factor (float, optional): Normalizer, the number of GT boxes.
            reduction_override (str, optional): Overrides ``reduction``.

        Returns:
            Tensor: The loss.
        """
        labels, iou = target
        num_classes = pred.size(-1)
        # Background label C becomes an all-zero row.
        one_hot = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(pred.dtype)
        target_score = one_hot * iou[:, None].to(pred.dtype)
        negative_weight = self.alpha * pred.sigmoid().detach().pow(self.gamma) * (1 - one_hot)
        loss = F.binary_cross_entropy_with_logits(pred, target_score, reduction='none')
        loss = loss * (negative_weight + target_score)
        if weight is not None:
            weight = weight.view(-1, 1) if weight.dim() == 1 else weight
        reduction = reduction_override if reduction_override else self.reduction
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)
