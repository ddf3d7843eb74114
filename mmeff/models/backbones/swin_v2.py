"""Swin Transformer V2 (Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022,
https://arxiv.org/abs/2111.09883) as MMPretrain 1.2 builds it, made to round-trip its own checkpoints.

MMPretrain's ``SwinTransformerV2`` saves the coordinate tables of the continuous position bias
(``relative_coords_table``, ``relative_position_index``) but its load hook deletes them from every incoming
state dict, since they only depend on the window size. A strict ``load_state_dict`` therefore fails even on
the model's own weights. ``SwinTransformerV2Strict`` keeps every layer of MMPretrain's model and only stops
saving the tables: they are recomputed at construction, as the load hook assumes. It also drops MMPretrain's
per-call overheads (``mmpretrain_lean.make_lean``: mask cache, FFN without its shim, unfold-free merging).
"""
from mmpretrain.models.backbones import SwinTransformerV2
from mmpretrain.models.utils import WindowMSAV2

from mmeff.registry import register_backbone

from .mmpretrain_lean import LeanSwinOnInit

RECOMPUTED_TABLES = ('relative_coords_table', 'relative_position_index')


@register_backbone
class SwinTransformerV2Strict(LeanSwinOnInit, SwinTransformerV2):
    """MMPretrain's ``SwinTransformerV2`` (same arguments, same weights) whose fixed position tables are
    non-persistent buffers, so that its state dict loads strictly; made lean like the other MMPretrain models."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for module in self.modules():
            if isinstance(module, WindowMSAV2):
                for name in RECOMPUTED_TABLES:
                    table = getattr(module, name)
                    delattr(module, name)
                    module.register_buffer(name, table, persistent=False)
