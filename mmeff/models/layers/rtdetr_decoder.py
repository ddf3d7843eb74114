"""The RT-DETR transformer decoder: iterative box refinement over deformable cross-attention.

RT-DETR, Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069 (Sec. 4.3 and the official decoder).

Why not mmdet's ``DinoTransformerDecoder``: RT-DETR's query position embedding is an MLP on the
reference box itself (DINO's is an MLP on a sine encoding of it), the decoder has no final norm,
and inference may stop after any layer (``num_layers_to_run``) without retraining.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmdet.models.layers import MLP, inverse_sigmoid
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from mmeff.registry import DET_MODELS

from .ms_deform_attn import RTDETRMSDeformableAttention

FP16_MAX = torch.finfo(torch.float16).max  # 65504


def clamp_to_fp16_range(x: Tensor) -> Tensor:
    """``x`` clamped to fp16's finite range when it is computed in fp16 (a half tensor, or fp16 autocast on
    its device), else ``x`` itself.

    The official decoder clamps the FFN's residual sum before the last norm (``tgt.clamp(-65504, 65504)``):
    an fp16 FFN output that overflowed to inf would make the norm, and every later layer, NaN. Under
    autocast the sum is fp32 (the norm before it autocasts to fp32) but holds the fp16 FFN's inf, hence the
    autocast test. In fp32 and bf16 (fp32's range) nothing is done, so their outputs and the exported
    fp32 graph are unchanged.
    """
    device = x.device.type
    if x.dtype == torch.float16 or (torch.is_autocast_enabled(device)
                                    and torch.get_autocast_dtype(device) == torch.float16):
        return x.clamp(-FP16_MAX, FP16_MAX)
    return x


@DET_MODELS.register_module()
class RTDETRDecoderLayer(BaseModule):
    """Post-norm decoder layer: self-attention, deformable cross-attention, ReLU FFN.

    Module names follow the official checkpoint (``self_attn``, ``cross_attn``, ``norm1-3``,
    ``linear1/2``) so the converter maps them one to one.

    Args:
        embed_dims (int): Query channels. Defaults to 256.
        num_heads (int): Heads of both attentions. Defaults to 8.
        feedforward_channels (int): FFN hidden channels. Defaults to 1024.
        dropout (float): Dropout after each sub-block. Defaults to 0 (the official configs).
        num_levels (int): Feature levels of the memory. Defaults to 3.
        num_points (int): Deformable sampling points per level and head. Defaults to 4.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 feedforward_channels: int = 1024,
                 dropout: float = 0.0,
                 num_levels: int = 3,
                 num_points: int = 4,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.self_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                               batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.cross_attn = RTDETRMSDeformableAttention(embed_dims, num_heads, num_levels, num_points)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.linear1 = nn.Linear(embed_dims, feedforward_channels)
        self.linear2 = nn.Linear(feedforward_channels, embed_dims)
        self.norm3 = nn.LayerNorm(embed_dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self,
                query: Tensor,
                query_pos: Tensor,
                reference_boxes: Tensor,
                memory: Tensor,
                spatial_shapes: List[Tuple[int, int]],
                self_attn_mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query (Tensor): (B, Q, C).
            query_pos (Tensor): (B, Q, C), added to queries and keys, not to values.
            reference_boxes (Tensor): (B, Q, 4) normalized (cx, cy, w, h) on the feature maps.
            memory (Tensor): (B, N, C), flattened feature levels.
            spatial_shapes (list[tuple[int, int]]): (h, w) of each level.
            self_attn_mask (Tensor, optional): (Q, Q) bool, True = may not attend (keeps the
                denoising groups and the matching queries apart).

        Returns:
            Tensor: (B, Q, C).
        """
        q = k = query + query_pos
        query = self.norm1(query + self.dropout(
            self.self_attn(q, k, query, attn_mask=self_attn_mask, need_weights=False)[0]))
        query = self.norm2(query + self.dropout(
            self.cross_attn(query + query_pos, reference_boxes, memory, spatial_shapes)))
        ffn = self.linear2(self.dropout(self.linear1(query).relu()))
        return self.norm3(clamp_to_fp16_range(query + self.dropout(ffn)))


@DET_MODELS.register_module()
class RTDETRTransformerDecoder(BaseModule):
    """Stack of RT-DETR decoder layers with iterative box refinement.

    Layer ``i`` refines the (detached) box of layer ``i - 1``:
    ``box_i = sigmoid(reg_branches[i](query_i) + inverse_sigmoid(box_{i-1}.detach()))``.
    The returned references are not detached, so the head's layer-``i`` box, computed from
    ``references[i]``, also trains layer ``i - 1``'s box (the official "look forward twice").

    Args:
        num_layers (int): Decoder layers (R18: 3, R34: 4, R50/R101/L/X: 6).
        layer_cfg (dict): Keyword arguments of :class:`RTDETRDecoderLayer`.
        embed_dims (int): Query channels. Defaults to 256.
    """

    def __init__(self, num_layers: int, layer_cfg: Optional[dict] = None, embed_dims: int = 256,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        layer_cfg = dict(layer_cfg or {})
        layer_cfg.setdefault('embed_dims', embed_dims)
        if layer_cfg['embed_dims'] != embed_dims:
            raise ValueError(f"layer_cfg.embed_dims ({layer_cfg['embed_dims']}) must equal the "
                             f'decoder embed_dims ({embed_dims}).')
        self.num_layers = num_layers
        self.embed_dims = embed_dims
        self.layers = ModuleList([RTDETRDecoderLayer(**layer_cfg) for _ in range(num_layers)])
        # Position embedding of a query = MLP of its reference box (cx, cy, w, h), 4 -> 2C -> C.
        self.query_pos_head = MLP(4, 2 * embed_dims, embed_dims, num_layers=2)

    def init_weights(self) -> None:
        """Xavier on the query position MLP, as the official code; layers init themselves."""
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)

    def forward(self,
                query: Tensor,
                memory: Tensor,
                reference_boxes: Tensor,
                spatial_shapes: List[Tuple[int, int]],
                valid_ratios: Tensor,
                reg_branches: nn.ModuleList,
                self_attn_mask: Optional[Tensor] = None,
                num_layers_to_run: Optional[int] = None) -> Tuple[Tensor, List[Tensor]]:
        """
        Args:
            query (Tensor): (B, Q, C) initial content queries.
            memory (Tensor): (B, N, C) flattened feature levels.
            reference_boxes (Tensor): (B, Q, 4) initial boxes, sigmoid space (cx, cy, w, h)
                normalized to the valid image, detached.
            spatial_shapes (list[tuple[int, int]]): (h, w) of each level.
            valid_ratios (Tensor): (B, 2) valid (unpadded) fraction (w, h) of the feature maps.
            reg_branches (nn.ModuleList): The head's box branches, one per decoder layer.
            self_attn_mask (Tensor, optional): (Q, Q) bool, True = may not attend.
            num_layers_to_run (int, optional): Stop after this many layers (speed tuning without
                retraining); all layers by default.

        Returns:
            tuple[Tensor, list[Tensor]]: Hidden states (num_layers_to_run, B, Q, C) and the
            references [initial, box_0, ..., box_{k-2}], each (B, Q, 4); ``references[i]`` is the
            box that layer ``i`` refines.
        """
        num_layers_to_run = num_layers_to_run or self.num_layers
        # Boxes are normalized to the valid image; the attention samples the padded maps.
        to_feature_coords = valid_ratios.repeat(1, 2)[:, None, :]  # (B, 1, 4)
        hidden_states, references = [], [reference_boxes]
        for layer_id in range(num_layers_to_run):
            query_pos = self.query_pos_head(reference_boxes)
            query = self.layers[layer_id](query, query_pos, reference_boxes * to_feature_coords,
                                          memory, spatial_shapes, self_attn_mask)
            hidden_states.append(query)
            if layer_id + 1 < num_layers_to_run:
                delta = reg_branches[layer_id](query)
                new_boxes = (delta + inverse_sigmoid(reference_boxes)).sigmoid()
                references.append(new_boxes)
                reference_boxes = new_boxes.detach()
        return torch.stack(hidden_states), references
