"""AIFI: RT-DETR's attention-based intra-scale feature interaction.

Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024,
https://arxiv.org/abs/2304.08069, Sec. 4.2: one transformer encoder layer on S5 only (applying it
to S3/S4 as well is slower and not more accurate).
"""
from functools import lru_cache
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch import Tensor

from mmeff.registry import DET_MODELS


def sincos_position_embedding_2d(height: int,
                                 width: int,
                                 embed_dim: int,
                                 temperature: float = 10000.,
                                 device: torch.device = None,
                                 dtype: torch.dtype = torch.float32) -> Tensor:
    """2-D sin-cos position embedding of a ``height x width`` map, as RT-DETR's: ``[1, H*W, C]``.

    Channels are ``[sin(y w), cos(y w), sin(x w), cos(x w)]`` with ``C/4`` frequencies
    ``w_i = temperature^(-i / (C/4))``, tokens in row-major order (y = row, x = column).
    The official code builds its grid with ``meshgrid(arange(W), arange(H))`` and flattens it
    column-major, which equals this for square maps and scrambles positions for non-square ones.
    mmdet's ``SinePositionalEncoding`` interleaves sin/cos and starts at 1, so it does not fit the
    official weights.
    """
    assert embed_dim % 4 == 0, \
        f'the 2-D sin-cos embedding needs channels divisible by 4, got {embed_dim}'
    pos_dim = embed_dim // 4
    omega = 1. / temperature**(torch.arange(pos_dim, dtype=torch.float32, device=device) / pos_dim)
    y = torch.arange(height, dtype=torch.float32, device=device).repeat_interleave(width)
    x = torch.arange(width, dtype=torch.float32, device=device).repeat(height)
    out_y = y[:, None] * omega[None]  # H*W, C/4
    out_x = x[:, None] * omega[None]
    pos = torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)
    return pos[None].to(dtype)


# One embedding per (H, W, C, temperature, device, dtype): multi-scale training cycles through a
# handful of sizes, and re-building it every step would allocate and upload it each time.
cached_sincos_position_embedding_2d = lru_cache(maxsize=32)(sincos_position_embedding_2d)


@DET_MODELS.register_module()
class AIFILayer(BaseModule):
    """Post-norm transformer encoder layer with the position embedding added to queries and keys.

    https://arxiv.org/abs/2304.08069 (AIFI). mmdet's ``DetrTransformerEncoderLayer`` has the same
    maths, but its mmcv attention wrapper asks for the attention weights, which disables PyTorch's
    fused ``scaled_dot_product_attention`` path; ``nn.MultiheadAttention`` with
    ``need_weights=False`` keeps it (and the official key names).

    Args:
        hidden_dim: token channels.
        nhead: attention heads.
        dim_feedforward: hidden width of the FFN.
        dropout: dropout on attention weights, FFN hidden and both residual branches.
        act_cfg: FFN activation (RT-DETR: GELU).
    """

    def __init__(self,
                 hidden_dim: int = 256,
                 nhead: int = 8,
                 dim_feedforward: int = 1024,
                 dropout: float = 0.0,
                 act_cfg: ConfigType = dict(type='GELU'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        assert hidden_dim % nhead == 0, \
            f'hidden_dim ({hidden_dim}) must be divisible by nhead ({nhead})'
        self.self_attn = nn.MultiheadAttention(hidden_dim, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden_dim, dim_feedforward)
        self.activation = build_activation_layer(act_cfg)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: [B, N, C] tokens, pos: [1, N, C] position embedding; returns [B, N, C]."""
        q = k = x + pos
        attn = self.self_attn(q, k, x, need_weights=False)[0]
        x = self.norm1(x + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm2(x + self.dropout2(ffn))


@DET_MODELS.register_module()
class AIFI(BaseModule):
    """Attention-based intra-scale feature interaction, as an mmdet neck.

    https://arxiv.org/abs/2304.08069, Sec. 4.2. Takes a tuple of NCHW maps, runs
    ``num_encoder_layers`` :class:`AIFILayer` on the flattened tokens of each level in
    ``use_encoder_idx`` (default only S5, the last of three levels) and returns the tuple with
    those levels replaced; other levels pass through unchanged.

    Args:
        hidden_dim: channels of the levels it processes.
        nhead: attention heads.
        dim_feedforward: hidden width of the FFN.
        dropout: dropout in the encoder layers.
        enc_act_cfg: FFN activation.
        use_encoder_idx: indices of the input levels to process.
        num_encoder_layers: encoder layers per processed level.
        pe_temperature: temperature of the sin-cos position embedding.
    """

    def __init__(self,
                 hidden_dim: int = 256,
                 nhead: int = 8,
                 dim_feedforward: int = 1024,
                 dropout: float = 0.0,
                 enc_act_cfg: ConfigType = dict(type='GELU'),
                 use_encoder_idx: Sequence[int] = (2, ),
                 num_encoder_layers: int = 1,
                 pe_temperature: float = 10000.,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        assert all(i >= 0 for i in use_encoder_idx), \
            f'use_encoder_idx must hold non-negative level indices, got {use_encoder_idx}'
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = tuple(use_encoder_idx)
        self.pe_temperature = pe_temperature
        # layers[i][j]: j-th encoder layer of level use_encoder_idx[i]
        self.layers = nn.ModuleList([
            nn.ModuleList([
                AIFILayer(hidden_dim, nhead, dim_feedforward, dropout, enc_act_cfg)
                for _ in range(num_encoder_layers)
            ]) for _ in self.use_encoder_idx
        ])

    def position_embedding(self, height: int, width: int, x: Tensor) -> Tensor:
        """[1, H*W, C] embedding for a map of that size, cached except while exporting."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            build = sincos_position_embedding_2d
        else:
            build = cached_sincos_position_embedding_2d
        return build(height, width, self.hidden_dim, self.pe_temperature, x.device, x.dtype)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        outs = list(inputs)
        for level, layers in zip(self.use_encoder_idx, self.layers):
            assert level < len(inputs), \
                f'use_encoder_idx has level {level} but only {len(inputs)} levels came in'
            x = inputs[level]
            b, c, h, w = x.shape
            assert c == self.hidden_dim, \
                f'AIFI level {level} has {c} channels; set hidden_dim={c} or project it first'
            tokens = x.flatten(2).transpose(1, 2)  # B, H*W, C
            pos = self.position_embedding(h, w, x)
            for layer in layers:
                tokens = layer(tokens, pos)
            outs[level] = tokens.transpose(1, 2).reshape(b, c, h, w)
        return tuple(outs)
