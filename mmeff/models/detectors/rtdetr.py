"""RT-DETR as an mmdet ``DetectionTransformer``.

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.models.detectors import DetectionTransformer
from mmdet.models.layers import CdnQueryGenerator
from mmdet.structures import OptSampleList
from mmdet.utils import ConfigType
from torch import Tensor

from mmeff.registry import DET_MODELS

ANCHOR_CACHE_SIZE = 16
# Set from the decoder by the detector, as mmdet's DeformableDETR does.
DERIVED_HEAD_ARGS = ('share_pred_layer', 'num_pred_layer', 'as_two_stage')


@DET_MODELS.register_module()
class RTDETR(DetectionTransformer):
    """RT-DETR: backbone -> hybrid encoder (the neck) -> top-K query selection -> decoder.

    DINO's flow (``pre_transformer -> forward_encoder -> pre_decoder -> forward_decoder``)
    without ``forward_encoder``, since the hybrid encoder is the neck; DINO's two-stage,
    box-refining head (:class:`RTDETRHead` is a ``DINOHead``) and contrastive denoising queries.
    The queries are the top-K encoder tokens themselves (no learned query content), their initial
    boxes the encoder boxes on anchors of every feature cell. A ``DetectionTransformer``, not a
    ``DINO``: of DINO and Deformable DETR it would use only the constructor's bookkeeping, none of
    their layers, initialization or steps.

    Args:
        decoder (dict): Config of the decoder, built from the registry: a variant is a module
            with the ``forward``, ``num_layers`` and ``embed_dims`` of
            :class:`RTDETRTransformerDecoder`. Its ``num_layers`` sets the head's branches (one
            per layer plus one for the encoder tokens).
        bbox_head (dict): Config of the head (:class:`RTDETRHead`), without the
            ``share_pred_layer``, ``num_pred_layer`` and ``as_two_stage`` set here.
        feat_channels (Sequence[int]): Channels of the neck's maps. Defaults to (256, 256, 256).
        num_feature_levels (int): Number of maps. Defaults to 3.
        anchor_size (float): Anchor side on level 0 as a fraction of the image, doubled on each
            level. Defaults to 0.05.
        anchor_eps (float): Anchors closer than this to the image border are invalid.
            Defaults to 0.01.
        dn_cfg (dict): ``CdnQueryGenerator`` arguments; defaults to RT-DETR's 100 denoising
            queries, label noise 0.5, box noise 1.0.
        channels_last (bool): At inference, feed the backbone channels-last (NHWC) images, so that
            its and the encoder's convolutions and pooling run on NHWC maps, which oneDNN's CPU
            kernels run faster (the stem's max-pool several times). Same results. Not in training,
            whose NHWC backward was slower on the CPU. Defaults to True.
        test_cfg (dict): ``max_per_img`` (top-K over queries x classes, default 300) and
            ``eval_idx``: the last decoder layer to run at inference (-1 = the last layer),
            speed tuning without retraining.
        Others: see :class:`DetectionTransformer` (``num_queries`` is K = 300).
    """

    def __init__(self,
                 *args,
                 decoder: ConfigType,
                 bbox_head: ConfigType,
                 feat_channels: Sequence[int] = (256, 256, 256),
                 num_feature_levels: int = 3,
                 anchor_size: float = 0.05,
                 anchor_eps: float = 1e-2,
                 num_queries: int = 300,
                 dn_cfg: Optional[dict] = None,
                 channels_last: bool = True,
                 **kwargs) -> None:
        if len(feat_channels) != num_feature_levels:
            raise ValueError(f'feat_channels {tuple(feat_channels)} must list one channel count '
                             f'per feature level ({num_feature_levels}).')
        derived = [key for key in DERIVED_HEAD_ARGS if key in bbox_head]
        if derived:
            raise ValueError(f'bbox_head sets {derived}: RTDETR derives them from the decoder, '
                             f'remove them from the bbox_head config.')
        self.feat_channels = tuple(feat_channels)
        self.num_feature_levels = num_feature_levels
        self.anchor_size = anchor_size
        self.anchor_eps = anchor_eps
        self.channels_last = channels_last
        self._anchor_cache: Dict[tuple, Tuple[Tensor, Tensor, Tensor]] = {}
        # NOTE as DINO's head: unshared class and box branches, one per decoder layer (box
        # refinement) and the last for the encoder tokens (two-stage query selection).
        bbox_head = dict(bbox_head, share_pred_layer=False, num_pred_layer=decoder['num_layers'] + 1,
                         as_two_stage=True)
        super().__init__(*args, decoder=decoder, bbox_head=bbox_head, num_queries=num_queries,
                         **kwargs)
        if dn_cfg is None:
            dn_cfg = dict(label_noise_scale=0.5, box_noise_scale=1.0,
                          group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100))
        self.dn_query_generator = CdnQueryGenerator(
            **dn_cfg, num_classes=self.bbox_head.num_classes, embed_dims=self.embed_dims,
            num_matching_queries=num_queries)
        eval_idx = (self.test_cfg or {}).get('eval_idx', -1)
        num_layers = self.decoder.num_layers
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(f'test_cfg.eval_idx={eval_idx} is not a layer of the '
                             f'{num_layers}-layer decoder: use -1 (last) or 0..{num_layers - 1}.')
        self.num_eval_layers = eval_idx % num_layers + 1

    def _init_layers(self) -> None:
        """Input projections, the decoder and the encoder-output projection."""
        self.decoder = DET_MODELS.build(self.decoder)
        self.embed_dims = self.decoder.embed_dims
        self.input_proj = nn.ModuleList(
            ConvModule(channels, self.embed_dims, 1, norm_cfg=dict(type='BN'), act_cfg=None)
            for channels in self.feat_channels)
        self.enc_output = nn.Sequential(nn.Linear(self.embed_dims, self.embed_dims),
                                        nn.LayerNorm(self.embed_dims))

    def init_weights(self) -> None:
        """Children init themselves; Xavier on the projections as the official code."""
        super().init_weights()
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj.conv.weight)

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """Backbone and hybrid encoder, on channels-last maps at inference when ``channels_last``."""
        if self.channels_last and not self.training:
            batch_inputs = batch_inputs.contiguous(memory_format=torch.channels_last)
        return super().extract_feat(batch_inputs)

    def forward_transformer(self, img_feats: Tuple[Tensor],
                            batch_data_samples: OptSampleList = None) -> Dict:
        """``pre_transformer -> pre_decoder -> forward_decoder``: the head's inputs.

        NOTE: DINO's flow (``batch_data_samples`` reach ``pre_decoder`` for the denoising
        queries) without ``forward_encoder``: the hybrid encoder ran as the neck, so the flattened
        maps go straight to the query selection.
        """
        selection_inputs, decoder_inputs = self.pre_transformer(img_feats, batch_data_samples)
        queries, head_inputs = self.pre_decoder(**selection_inputs,
                                                batch_data_samples=batch_data_samples)
        decoder_inputs.update(queries)
        head_inputs.update(self.forward_decoder(**decoder_inputs))
        return head_inputs

    def forward_encoder(self, **kwargs) -> Dict:
        """Not a step of RT-DETR (see :meth:`forward_transformer`); abstract in mmdet's base."""
        raise NotImplementedError('RT-DETR has no transformer encoder after the neck: its hybrid '
                                  'encoder is the neck.')

    def pre_transformer(self, img_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Project each level to ``embed_dims``, flatten the levels into one sequence, and get
        the anchors of these shapes.

        Returns:
            tuple[dict, dict]: ``memory`` (B, N, C), ``anchors`` and ``valid_mask`` for
            :meth:`pre_decoder`; ``spatial_shapes`` [(h, w)] and ``valid_ratios`` (B, 2) for the
            decoder.
        """
        if len(img_feats) != self.num_feature_levels:
            raise ValueError(f'The neck gives {len(img_feats)} maps, the decoder expects '
                             f'{self.num_feature_levels}: set num_feature_levels (and the '
                             f"decoder layers' num_levels) to match the neck.")
        feats = [proj(feat) for proj, feat in zip(self.input_proj, img_feats)]
        spatial_shapes = [tuple(feat.shape[2:]) for feat in feats]
        memory = torch.cat([feat.flatten(2).transpose(1, 2) for feat in feats], 1)  # (B, N, C)
        ratios = self.get_valid_ratios(batch_data_samples, memory.size(0))
        anchors, valid_mask, valid_ratios = self.generate_anchors(spatial_shapes, ratios,
                                                                  memory.device)
        selection_inputs = dict(memory=memory, anchors=anchors, valid_mask=valid_mask)
        return selection_inputs, dict(spatial_shapes=spatial_shapes, valid_ratios=valid_ratios)

    @staticmethod
    def get_valid_ratios(batch_data_samples: OptSampleList,
                         batch_size: int) -> Tuple[Tuple[float, float], ...]:
        """Fraction (w, h) of the padded batch each image covers; ones without metainfo."""
        if not batch_data_samples or 'batch_input_shape' not in batch_data_samples[0].metainfo:
            return ((1.0, 1.0), ) * batch_size
        ratios = []
        for sample in batch_data_samples:
            (img_h, img_w), (pad_h, pad_w) = sample.img_shape, sample.batch_input_shape
            ratios.append((img_w / pad_w, img_h / pad_h))
        return tuple(ratios)

    def generate_anchors(self, spatial_shapes: List[Tuple[int, int]],
                         valid_ratios: Sequence[Tuple[float, float]],
                         device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """One anchor per feature cell: its centre and a square of ``anchor_size * 2 ** level``.

        Anchors are normalized to each image's valid region; those within ``anchor_eps`` of its
        border (or in the padding) are invalid. Float32 (also under AMP) and cached per shapes
        and ratios (a small LRU), so a fixed input size allocates them once.

        Returns:
            tuple[Tensor, Tensor, Tensor]: anchors (B, N, 4) in logit space (``inf`` where
            invalid), the valid mask (B, N, 1) and the valid ratios (B, 2) as a tensor.
        """
        key = (tuple(spatial_shapes), tuple(valid_ratios), device)
        if key in self._anchor_cache:
            self._anchor_cache[key] = self._anchor_cache.pop(key)  # most recently used last
            return self._anchor_cache[key]
        anchors = []
        for level, (h, w) in enumerate(spatial_shapes):
            ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                                    torch.arange(w, device=device, dtype=torch.float32),
                                    indexing='ij')
            centres = torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], -1).flatten(0, 1)  # (h*w, 2)
            sizes = torch.full_like(centres, self.anchor_size * 2.0**level)
            anchors.append(torch.cat([centres, sizes], -1))
        ratios = torch.tensor(valid_ratios, device=device)
        # From fractions of the padded maps to fractions of each image: (B, N, 4).
        anchors = torch.cat(anchors)[None] / ratios.repeat(1, 2)[:, None]
        eps = self.anchor_eps
        valid_mask = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
        anchors = torch.log(anchors / (1 - anchors)).masked_fill(~valid_mask, float('inf'))
        if len(self._anchor_cache) >= ANCHOR_CACHE_SIZE:
            self._anchor_cache.pop(next(iter(self._anchor_cache)))
        self._anchor_cache[key] = (anchors, valid_mask, ratios)
        return self._anchor_cache[key]

    def pre_decoder(self, memory: Tensor, anchors: Tensor, valid_mask: Tensor,
                    batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Top-K query selection from the encoder tokens, plus the denoising queries in training.

        Returns:
            tuple[dict, dict]: decoder inputs (``query`` (B, Q, C), ``memory``,
            ``reference_boxes`` (B, Q, 4) in [0, 1], ``dn_mask``) and head inputs (the encoder's
            top-K logits, boxes, P(X) logits and ``dn_meta``; empty at inference).
        """
        enc_memory = self.enc_output(memory * valid_mask.to(memory.dtype))
        selected = self.bbox_head.select_queries(enc_memory, anchors, valid_mask, self.num_queries)
        # The queries are the selected tokens (detached, as the official code), not learned.
        query = selected.tokens.detach()
        reference_logits = selected.box_logits.detach()
        if not self.training:
            decoder_inputs = dict(query=query, memory=memory,
                                  reference_boxes=reference_logits.sigmoid(), dn_mask=None)
            return decoder_inputs, dict()
        dn_label_query, dn_bbox_query, dn_mask, dn_meta = self.dn_query_generator(
            batch_data_samples)
        if dn_meta['num_denoising_queries'] == 0:
            # No GT box in this batch: keep the label embedding in the graph so that DDP does not
            # wait forever for its gradient.
            query = query + 0 * self.dn_query_generator.label_embedding.weight.sum()
        decoder_inputs = dict(
            query=torch.cat([dn_label_query, query], 1),
            memory=memory,
            reference_boxes=torch.cat([dn_bbox_query, reference_logits], 1).sigmoid(),
            dn_mask=dn_mask)
        head_inputs = dict(
            enc_outputs_class=selected.cls_logits,
            enc_outputs_coord=selected.box_logits.sigmoid(),
            dn_meta=dn_meta)
        if selected.iou_logits is not None:
            head_inputs['enc_outputs_iou'] = selected.iou_logits
        return decoder_inputs, head_inputs

    def forward_decoder(self, query: Tensor, memory: Tensor, reference_boxes: Tensor,
                        spatial_shapes: List[Tuple[int, int]], valid_ratios: Tensor,
                        dn_mask: Optional[Tensor] = None) -> Dict:
        """Run the decoder; at inference only up to ``test_cfg.eval_idx``.

        Returns:
            dict: ``hidden_states`` (num_layers_run, B, Q, C) and ``references`` (see
            :meth:`RTDETRTransformerDecoder.forward`).
        """
        hidden_states, references = self.decoder(
            query, memory, reference_boxes, spatial_shapes, valid_ratios,
            reg_branches=self.bbox_head.reg_branches, self_attn_mask=dn_mask,
            num_layers_to_run=None if self.training else self.num_eval_layers)
        return dict(hidden_states=hidden_states, references=references)
