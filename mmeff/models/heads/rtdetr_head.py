"""The RT-DETR head: uncertainty-minimal query selection and the decoder's prediction branches.

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069 (Sec. 4.3).
"""
import dataclasses
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmcv.cnn import Linear
from mmdet.models.dense_heads import DINOHead
from mmdet.models.utils import unpack_gt_instances
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from mmeff.registry import DET_MODELS

QUERY_SELECT_MODES = ('vfl', 'uncertainty')


@dataclasses.dataclass(frozen=True, eq=False)
class QuerySelection:
    """The K encoder tokens :meth:`RTDETRHead.select_queries` keeps: RT-DETR's initial queries.

    Attributes:
        indices: (B, K) positions of the selected tokens among the N encoder tokens.
        tokens: (B, K, C) the selected tokens (after the detector's ``enc_output``).
        cls_logits: (B, K, num_classes) their class logits.
        box_logits: (B, K, 4) their boxes (cx, cy, w, h) before the sigmoid: anchor plus the
            encoder box branch's refinement.
        iou_logits: (B, K) logits of their predicted IoU P(X); ``None`` in 'vfl' mode.
    """

    indices: Tensor
    tokens: Tensor
    cls_logits: Tensor
    box_logits: Tensor
    iou_logits: Optional[Tensor] = None


@DET_MODELS.register_module()
class RTDETRHead(DINOHead):
    r"""Prediction branches of every decoder layer and of the encoder, and top-K query selection.

    ``cls_branches[i]`` / ``reg_branches[i]`` predict classes and box refinements of decoder
    layer ``i``; the last ones (index ``num_decoder_layers``) score the encoder tokens. The losses
    are DINOHead's (Hungarian matching on every decoder layer, on the encoder's top-K output, and
    the denoising groups); with :class:`RTDETRVarifocalLoss` the classification target is the IoU.

    Uncertainty-minimal query selection, ``query_select``:

    - ``'vfl'`` (default, the official realization, weight-compatible): the IoU-aware varifocal
      loss trains the class score to equal the IoU of the matched box, and the top-K tokens by
      their maximal class logit become the queries.
    - ``'uncertainty'`` (the paper's U(X) = ||P(X) - C(X)|| made explicit): an extra linear
      ``enc_iou_head`` predicts the localization quality ``P(X) = sigmoid(enc_iou_head(X))``, the
      IoU of token X's encoder box with its matched GT; ``C(X) = max_c sigmoid(cls_c(X))`` is the
      classification confidence, and ``U(X) = |P(X) - C(X)|``. Tokens are ranked by
      ``C(X) - uncertainty_lambda * U(X)``. On the encoder's top-K tokens (matched to the GT with
      the Hungarian assigner, IoU* = IoU of the matched box, 0 when unmatched) two losses are
      added: ``enc_loss_iou_pred = mean BCE(P(X), IoU*)`` and
      ``enc_loss_uncertainty = loss_uncertainty_weight * mean U(X)``, whose gradient pulls class
      score and predicted IoU together.

    Args:
        num_classes (int): Object classes (80 for COCO).
        query_select (str): ``'vfl'`` or ``'uncertainty'``. Defaults to ``'vfl'``.
        uncertainty_lambda (float): Weight of U(X) in the selection score. Defaults to 1.0.
        loss_uncertainty_weight (float): Weight of ``enc_loss_uncertainty``. Defaults to 1.0.
        loss_cls (dict): Defaults to RT-DETR's VFL (weight 1, alpha 0.75, gamma 2).
        loss_bbox (dict): Defaults to L1 (weight 5).
        loss_iou (dict): Defaults to GIoU (weight 2).
        sync_cls_avg_factor (bool): Normalize by the GT count averaged over GPUs, as the
            official code. Defaults to True.
    """

    def __init__(self,
                 *args,
                 query_select: str = 'vfl',
                 uncertainty_lambda: float = 1.0,
                 loss_uncertainty_weight: float = 1.0,
                 loss_cls: ConfigType = dict(type='RTDETRVarifocalLoss', alpha=0.75, gamma=2.0,
                                             loss_weight=1.0),
                 loss_bbox: ConfigType = dict(type='L1Loss', loss_weight=5.0),
                 loss_iou: ConfigType = dict(type='GIoULoss', loss_weight=2.0),
                 sync_cls_avg_factor: bool = True,
                 **kwargs) -> None:
        if query_select not in QUERY_SELECT_MODES:
            raise ValueError(f'query_select={query_select!r} is not one of {QUERY_SELECT_MODES}.')
        self.query_select = query_select
        self.uncertainty_lambda = uncertainty_lambda
        self.loss_uncertainty_weight = loss_uncertainty_weight
        super().__init__(*args, loss_cls=loss_cls, loss_bbox=loss_bbox, loss_iou=loss_iou,
                         sync_cls_avg_factor=sync_cls_avg_factor, **kwargs)
        if not self.loss_cls.use_sigmoid:
            raise ValueError('RT-DETR scores classes with sigmoids: use a sigmoid loss_cls such as '
                             "dict(type='RTDETRVarifocalLoss').")

    def _init_layers(self) -> None:
        """DeformableDETRHead's branches, plus the IoU predictor of the 'uncertainty' mode."""
        super()._init_layers()
        if self.query_select == 'uncertainty':
            self.enc_iou_head = Linear(self.embed_dims, 1)

    def select_queries(self, enc_memory: Tensor, anchors: Tensor, valid_mask: Tensor,
                       num_queries: int) -> QuerySelection:
        """Score every encoder token and keep the top ``num_queries``.

        Args:
            enc_memory (Tensor): (B, N, C) encoder tokens after ``enc_output``.
            anchors (Tensor): (B, N, 4) anchor boxes in logit space (inverse sigmoid).
            valid_mask (Tensor): (B, N, 1) bool; invalid tokens are never selected.
            num_queries (int): K.

        Returns:
            QuerySelection: the selected tokens with their indices, class, box and IoU logits.
        """
        num_tokens = enc_memory.size(1)
        if num_queries > num_tokens:
            raise ValueError(f'num_queries ({num_queries}) exceeds the {num_tokens} encoder tokens '
                             f'of this input: lower num_queries or enlarge the input.')
        num_layers = self.num_pred_layer - 1
        cls_logits = self.cls_branches[num_layers](enc_memory)
        max_logits = cls_logits.max(-1).values
        iou_logits = None
        if self.query_select == 'vfl':
            score = max_logits
        else:
            iou_logits = self.enc_iou_head(enc_memory).squeeze(-1)
            confidence = max_logits.sigmoid()
            score = confidence - self.uncertainty_lambda * (iou_logits.sigmoid() - confidence).abs()
        score = score.masked_fill(~valid_mask.squeeze(-1), float('-inf'))
        indices = score.topk(num_queries, dim=1).indices

        def gather(x: Tensor) -> Tensor:
            return x.gather(1, indices[..., None].expand(-1, -1, x.size(-1)))

        # Only the K selected boxes are ever used: the box MLP runs on K tokens, not all N
        # (300 instead of 8400 at 640 px; the official code and HF run it on all N).
        # A dynamic-batch ONNX graph traced at batch 1 has batch-1 anchors: expand before gathering.
        anchors = anchors.expand(enc_memory.size(0), -1, -1)
        tokens = gather(enc_memory)
        return QuerySelection(
            indices=indices,
            tokens=tokens,
            cls_logits=gather(cls_logits),
            box_logits=self.reg_branches[num_layers](tokens) + gather(anchors),
            iou_logits=None if iou_logits is None else gather(iou_logits[..., None]).squeeze(-1))

    def loss(self,
             hidden_states: Tensor,
             references: List[Tensor],
             enc_outputs_class: Tensor,
             enc_outputs_coord: Tensor,
             batch_data_samples: SampleList,
             dn_meta: Dict[str, int],
             enc_outputs_iou: Optional[Tensor] = None) -> dict:
        """DINOHead's losses, plus the uncertainty losses when ``enc_outputs_iou`` is given.

        Args:
            enc_outputs_iou (Tensor, optional): (B, K) logits of P(X) of the top-K encoder tokens.
            Others: see :meth:`DINOHead.loss`.
        """
        # Matching and losses in fp32 under mixed precision, as the official code (outside its autocast):
        # bf16 would round the costs the Hungarian matching compares and the loss values themselves.
        # ``float()`` returns fp32 tensors unchanged.
        with torch.autocast(hidden_states.device.type, enabled=False):
            hidden_states, enc_outputs_class, enc_outputs_coord = (
                hidden_states.float(), enc_outputs_class.float(), enc_outputs_coord.float())
            references = [reference.float() for reference in references]
            losses = super().loss(hidden_states, references, enc_outputs_class, enc_outputs_coord,
                                  batch_data_samples, dn_meta)
            if enc_outputs_iou is not None:
                batch_gt_instances, _, batch_img_metas = unpack_gt_instances(batch_data_samples)
                losses.update(self.loss_uncertainty(enc_outputs_class, enc_outputs_coord,
                                                    enc_outputs_iou.float(), batch_gt_instances,
                                                    batch_img_metas))
        return losses

    def loss_uncertainty(self, enc_cls_scores: Tensor, enc_bbox_preds: Tensor,
                         enc_iou_logits: Tensor, batch_gt_instances: InstanceList,
                         batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """The 'uncertainty' mode's losses on the encoder's top-K tokens (see the class doc).

        Args:
            enc_cls_scores (Tensor): (B, K, num_classes) logits.
            enc_bbox_preds (Tensor): (B, K, 4) normalized (cx, cy, w, h).
            enc_iou_logits (Tensor): (B, K) logits of P(X).
            batch_gt_instances (list[InstanceData]): GT boxes and labels per image.
            batch_img_metas (list[dict]): Meta information per image.

        Returns:
            dict: ``enc_loss_iou_pred`` and ``enc_loss_uncertainty``.
        """
        labels_list, _, bbox_targets_list, _, _, _ = self.get_targets(
            list(enc_cls_scores.detach()), list(enc_bbox_preds.detach()), batch_gt_instances,
            batch_img_metas)
        labels = torch.cat(labels_list)
        bbox_targets = torch.cat(bbox_targets_list)
        pos = labels < self.num_classes
        iou_target = enc_iou_logits.new_zeros(labels.shape)
        iou_target[pos] = bbox_overlaps(
            bbox_cxcywh_to_xyxy(enc_bbox_preds.detach().reshape(-1, 4)[pos]),
            bbox_cxcywh_to_xyxy(bbox_targets[pos]), is_aligned=True)
        iou_logits = enc_iou_logits.reshape(-1)
        confidence = enc_cls_scores.reshape(-1, self.cls_out_channels).sigmoid().max(-1).values
        uncertainty = (iou_logits.sigmoid() - confidence).abs()
        return dict(
            enc_loss_iou_pred=F.binary_cross_entropy_with_logits(iou_logits, iou_target),
            enc_loss_uncertainty=self.loss_uncertainty_weight * uncertainty.mean())
