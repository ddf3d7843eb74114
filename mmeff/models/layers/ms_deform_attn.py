"""Multi-scale deformable attention written with ``F.grid_sample`` only.

Deformable DETR, Zhu et al., ICLR 2021, https://arxiv.org/abs/2010.04159 (Eq. 3), as used by
RT-DETR's decoder (Zhao et al., CVPR 2024, https://arxiv.org/abs/2304.08069): 3 levels, 4 points,
8 heads, sampling offsets scaled by the reference box (offset scale 0.5).

Why not mmcv's ``MultiScaleDeformableAttention``: its fast path is a compiled op that ONNX and
TensorRT cannot export, and its PyTorch fallback lives in ``mmcv.ops``, whose import needs mmcv's
compiled extension. This one is plain PyTorch (``GridSample`` exists from ONNX opset 16 on).
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmeff.registry import DET_MODELS


def ms_deform_attn_grid_sample(value: Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                               sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Attention-weighted sum of bilinearly sampled values over levels and points.

    Args:
        value (Tensor): (B, N, H, D), the flattened levels one after another, N = sum(h * w).
        spatial_shapes (Sequence[Tuple[int, int]]): (h, w) of each level, as Python ints so that
            splitting needs no device-to-host copy and traces into a static graph.
        sampling_locations (Tensor): (B, Q, H, L, P, 2), (x, y) normalized to [0, 1] of each level.
        attention_weights (Tensor): (B, Q, H, L, P), softmax-normalized over L * P.

    Returns:
        Tensor: (B, Q, H * D).
    """
    batch_size, _, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    value_levels = value.split([h * w for h, w in spatial_shapes], dim=1)
    # grid_sample wants [-1, 1] with align_corners=False: pixel centres at (i + 0.5) / size.
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (B, h*w, H, D) -> (B*H, D, h, w)
        value_l = value_levels[level].permute(0, 2, 3, 1).reshape(batch_size * num_heads,
                                                                  head_dims, h, w)
        # (B, Q, H, P, 2) -> (B*H, Q, P, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # (B*H, D, Q, P)
        sampled.append(F.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))
    # (B*H, D, Q, L*P) weighted by (B*H, 1, Q, L*P)
    sampled = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch_size * num_heads, 1, num_queries,
                                                        num_levels * num_points)
    output = (sampled * weights).sum(-1)  # (B*H, D, Q)
    return output.view(batch_size, num_heads * head_dims, num_queries).transpose(1, 2)


@DET_MODELS.register_module()
class RTDETRMSDeformableAttention(BaseModule):
    """Multi-scale deformable cross-attention of the RT-DETR decoder (grid_sample, no custom op).

    Each query looks at ``num_points`` locations per level around its reference box:
    ``location = box_centre + offset / num_points * box_size * offset_scale``.

    Args:
        embed_dims (int): Channels of queries and values. Defaults to 256.
        num_heads (int): Attention heads. Defaults to 8.
        num_levels (int): Feature levels of the value. Defaults to 3.
        num_points (int): Sampling points per head and level. Defaults to 4.
        offset_scale (float): Fraction of the box half-size one offset unit spans. Defaults to 0.5.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_levels: int = 3,
                 num_points: int = 4,
                 offset_scale: float = 0.5,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads}); change one of them.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.offset_scale = offset_scale
        num_samples = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_samples * 2)
        self.attention_weights = nn.Linear(embed_dims, num_samples)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """Deformable DETR's init: offsets start on rays in ``num_heads`` directions, at radii
        1..num_points; uniform attention; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        radii = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        # (heads, levels, points, 2)
        bias = directions.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels,
                                                               self.num_points, 1) * radii
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self,
                query: Tensor,
                reference_boxes: Tensor,
                value: Tensor,
                spatial_shapes: List[Tuple[int, int]],
                value_mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query (Tensor): (B, Q, C), content plus position embedding.
            reference_boxes (Tensor): (B, Q, 4) normalized (cx, cy, w, h) in the coordinates of
                the (padded) feature maps, the same box on every level.
            value (Tensor): (B, N, C), the flattened feature levels.
            spatial_shapes (list[tuple[int, int]]): (h, w) of each level.
            value_mask (Tensor, optional): (B, N), True where the value is valid.

        Returns:
            Tensor: (B, Q, C).
        """
        batch_size, num_queries, _ = query.shape
        if len(spatial_shapes) != self.num_levels:
            raise ValueError(f'{self.num_levels} feature levels expected, got '
                             f'{len(spatial_shapes)}: set num_levels to the number of maps the '
                             f'neck outputs.')
        value = self.value_proj(value)
        if value_mask is not None:
            value = value * value_mask[..., None].to(value.dtype)
        value = value.view(batch_size, -1, self.num_heads, self.embed_dims // self.num_heads)
        offsets = self.sampling_offsets(query).view(batch_size, num_queries, self.num_heads,
                                                    self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).view(batch_size, num_queries, self.num_heads,
                                                     self.num_levels * self.num_points)
        weights = weights.softmax(-1).view(batch_size, num_queries, self.num_heads, self.num_levels,
                                           self.num_points)
        centres = reference_boxes[:, :, None, None, None, :2]
        sizes = reference_boxes[:, :, None, None, None, 2:]
        locations = centres + offsets / self.num_points * sizes * self.offset_scale
        output = ms_deform_attn_grid_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(output)
