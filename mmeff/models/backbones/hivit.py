"""HiViT (Zhang et al., "HiViT: A Simpler and More Efficient Design of Hierarchical Vision Transformer",
ICLR 2023, https://arxiv.org/abs/2205.14949) as a multi-scale backbone, built from MMPretrain's HiViT layers.

HiViT keeps Swin's three-level pyramid but removes attention from the high-resolution stages: stages 1-2
are MLP blocks on the 4x4 / 2x2 sub-patches of every 16 px patch (so the token count never changes and
masking stays cheap), stage 3 is a plain ViT with global attention and relative position bias.

MMPretrain 1.2 has the layers (``PatchEmbed``, ``BlockWithRPE``, ``PatchMerge``), but its ``HiViT``
backbone cannot serve a detector or this benchmark as it is: its 'base' is not the paper's (24 instead of
20 attention blocks), an early ``out_indices`` entry reshapes the running tensor and breaks the following
blocks, the indices of the MLP and attention stages collide, the classifier misses the official model's
LayerNorm after pooling, and drop-path rates are read with ``.item()`` (no meta-device build).
``HiViTPyramid`` composes the same layers (same weight names) and returns one NCHW map per stage:
stride 4, 8 and 16.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.hivit import BlockWithRPE, PatchEmbed, PatchMerge
from mmpretrain.models.utils import build_norm_layer, resize_pos_embed, to_2tuple

from mmeff.registry import register_backbone

from ..layers.pyramid import drop_path_rates
from .base import PyramidBackbone


@register_backbone
class HiViTPyramid(PyramidBackbone):
    """HiViT returning the maps of its three stages.

    Args:
        arch (str | dict): 'tiny', 'small', 'base' (the paper's sizes) or a dict with ``embed_dims``
            (width of the attention stage), ``depths`` (blocks per stage) and ``num_heads``.
        img_size (int): input size; with ``rpe`` the model takes this size only.
        patch_size (int): size of a main-stage token (16).
        inner_patches (int): sub-patches per side of a token in the first stage (4: stride 4).
        stem_mlp_ratio (float): MLP ratio of the attention-free stages (3).
        mlp_ratio (float): MLP ratio of the attention stage (4).
        ape (bool): learned absolute position embedding before the attention stage.
        rpe (bool): relative position bias in the attention stage (official models: both).
        out_indices (Sequence[int]): stages to return, 0 (stride 4) to 2 (stride 16).
        out_type (str): 'featmap' returns NCHW maps; 'avg_featmap' returns the last stage averaged
            over tokens and normalized (the official classifier's ``fc_norm``), for a head without neck.

    No freezing: the stages are slices of one flat block list (MMPretrain's layout) and the position
    embedding is a parameter of the whole model.
    """
    # the paper's sizes (19.2M / 37.5M / 66.4M parameters); MMPretrain's 'base' has 24 attention blocks (79M),
    # not the official 20
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=384, depths=(1, 1, 10), num_heads=6)),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=384, depths=(2, 2, 20), num_heads=6)),
        **dict.fromkeys(['b', 'base'], dict(embed_dims=512, depths=(2, 2, 20), num_heads=8)),
    }
    out_types = ('featmap', 'avg_featmap')

    def __init__(self,
                 arch='tiny',
                 img_size=224,
                 patch_size=16,
                 inner_patches=4,
                 stem_mlp_ratio=3.,
                 mlp_ratio=4.,
                 qkv_bias=True,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.,
                 ape=True,
                 rpe=True,
                 layer_scale_init_value=0.,
                 out_indices: Sequence[int] = (2, ),
                 out_type='featmap',
                 norm_cfg=dict(type='LN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch.lower() if isinstance(arch, str) else arch)
        self.embed_dims, depths, num_heads = arch['embed_dims'], list(arch['depths']), arch['num_heads']
        num_stages = len(depths)
        self.set_out_indices(out_indices, num_stages, out_type)
        self.patch_size, self.inner_patches = patch_size, inner_patches
        self.img_size = to_2tuple(img_size)
        if any(s % patch_size for s in self.img_size):
            raise ValueError(f'img_size {img_size} must be a multiple of patch_size {patch_size}')
        self.grid_size = tuple(s // patch_size for s in self.img_size)
        self.rpe = rpe

        dim = self.embed_dims // 2**(num_stages - 1)
        self.patch_embed = PatchEmbed(self.img_size, patch_size, inner_patches, 3, dim, norm_cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], self.embed_dims)) \
            if ape else None
        self.pos_drop = nn.Dropout(p=drop_rate)

        # an attention-free stage holds two MLP blocks per depth unit, and the drop-path schedule counts
        # each of them (the official rule); plain floats so that a meta-device build works
        num_blocks = sum(depths) + sum(depths[:-1])
        dpr = iter(drop_path_rates(drop_path_rate, num_blocks))
        self.blocks = nn.ModuleList()  # flat, as MMPretrain's HiViT, so that its checkpoints load
        self.stage_ends = []
        for stage, depth in enumerate(depths):
            is_main = stage == num_stages - 1
            for _ in range(depth if is_main else 2 * depth):
                self.blocks.append(
                    BlockWithRPE(self.grid_size[0], dim, num_heads if is_main else 0,
                                 mlp_ratio if is_main else stem_mlp_ratio, qkv_bias, None, drop=drop_rate,
                                 attn_drop=attn_drop_rate, drop_path=next(dpr), rpe=rpe and is_main,
                                 layer_scale_init_value=layer_scale_init_value, norm_cfg=norm_cfg))
            self.stage_ends.append(len(self.blocks))
            if not is_main:
                self.blocks.append(PatchMerge(dim, norm_cfg))
                dim *= 2
        self.num_main_blocks = depths[-1]
        self.fc_norm = build_norm_layer(norm_cfg, self.embed_dims) if out_type == 'avg_featmap' else None
        self.set_stage_features([self.embed_dims // 2**(num_stages - 1 - i) for i in range(num_stages)],
                                [patch_size // inner_patches * 2**i for i in range(num_stages)])

    def init_weights(self):
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'
        if self.pos_embed is not None and not pretrained:
            trunc_normal_(self.pos_embed, std=.02)

    def _check_size(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        if hw[0] % self.patch_size or hw[1] % self.patch_size:
            raise ValueError(f'HiViT takes inputs whose sides are multiples of {self.patch_size}, got {hw}')
        grid = (hw[0] // self.patch_size, hw[1] // self.patch_size)
        if self.rpe and grid != self.grid_size:
            raise ValueError(f'this HiViT has a relative position bias for {self.img_size} inputs only, got {hw}: '
                             f'build it with img_size={hw[0] if hw[0] == hw[1] else hw}')
        return grid

    def _sub_patch_map(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """[B, N, k, k, C] tokens of k x k sub-patches -> [B, C, H * k, W * k]."""
        B, _, k, _, C = x.shape
        return x.reshape(B, grid[0], grid[1], k, k, C).permute(0, 5, 1, 3, 2, 4).reshape(
            B, C, grid[0] * k, grid[1] * k)

    # NOTE: PyramidBackbone's stage loop does not fit: the first stages run on the sub-patches of every
    # token, and all stages share one flat block list, with patch merging between them.
    def forward(self, x: torch.Tensor) -> tuple:
        grid = self._check_size(tuple(x.shape[-2:]))
        x = self.patch_embed(x)  # B, N, 4, 4, C/4
        outs = []
        begin = 0
        for stage, end in enumerate(self.stage_ends[:-1]):
            for block in self.blocks[begin:end]:
                x = block(x)
            if stage in self.out_indices:
                outs.append(self._sub_patch_map(x, grid))
            x = self.blocks[end](x)  # patch merging: B, N, k/2, k/2, 2C
            begin = end + 1
        x = x[:, :, 0, 0, :]  # B, N, C
        if self.pos_embed is not None:
            pos_embed = self.pos_embed if grid == self.grid_size else resize_pos_embed(
                self.pos_embed, self.grid_size, grid, num_extra_tokens=0)
            x = x + pos_embed
        x = self.pos_drop(x)
        for block in self.blocks[begin:]:
            x = block(x, rpe_index=True if self.rpe else None)
        if self.out_type == 'avg_featmap':
            outs.append(self.fc_norm(x.mean(dim=1)))
        elif len(self.stage_ends) - 1 in self.out_indices:
            outs.append(x.transpose(1, 2).reshape(x.shape[0], -1, *grid))
        return tuple(outs)
