"""The isotropic ViT skeleton of *Which Transformer to Favor* with swappable parts.

ViT (Dosovitskiy et al., https://arxiv.org/abs/2010.11929) as trained by DeiT III (Touvron et al.,
https://arxiv.org/abs/2204.07118): patch embedding, a class token without position embedding,
LayerScale, qkv bias, LayerNorm eps 1e-6. Its token mixer, its MLP block and the token-sequence
reducers between blocks are registered parts (``mmeff.models.layers.vit_blocks``).
"""
import math
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.logging import print_log
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import resize_pos_embed
from torch import nn

from mmeff.registry import register_backbone

from ..layers.pyramid import check_divisible, resolve_arch
from ..layers.vit_blocks import (
    MLP_BLOCKS,
    TOKEN_MIXERS,
    TOKEN_REDUCERS,
    TokenState,
    ViTBlock,
    build_token_norm,
    build_vit_part,
)

# The size classes of the paper (one source of truth; read-only so no factory can change it).
VIT_ARCHS: Mapping[str, Mapping[str, float]] = MappingProxyType({
    'tiny': MappingProxyType(dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)),
    'small': MappingProxyType(dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)),
    'base': MappingProxyType(dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)),
})


@register_backbone
class ViTWithMixer(BaseBackbone):
    """Isotropic ViT whose token mixer, MLP block and token reducers are registered parts.

    The ViT/DeiT-III baseline of *Which Transformer to Favor* (https://arxiv.org/abs/2308.09372)
    with the defaults; e.g. ``mixer=dict(type='LinformerAttention', proj_len=64)`` gives Linformer.

    Args:
        arch: ``'tiny'`` (192/12/3), ``'small'`` (384/12/6), ``'base'`` (768/12/12) or a dict with
            ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``.
        img_size: the training resolution; position embeddings are learned for its patch grid and
            resized (bicubic) for other input sizes and for checkpoints of other sizes.
        patch_size: the patch side in pixels.
        qkv_bias: bias of the query/key/value projection.
        init_values: LayerScale init; ``None`` disables LayerScale.
        drop_rate: dropout after the position embedding and in the MLP.
        drop_path_rate: stochastic depth, increasing linearly to this value over the blocks.
        norm_eps: the norms' epsilon.
        with_cls_token: prepend a class token (without position embedding, as DeiT III).
        out_type: ``'cls_token'``, ``'avg'`` (mean of the final tokens, e.g. GFNet) or
            ``'featmap'``: the patch tokens as one stride-``patch_size`` map ``[B, C, H/p, W/p]``,
            the input of a detection neck (e.g. ``SimpleFeaturePyramid``, ViTDet); it needs the
            full patch grid, so it cannot be combined with token reducers.
        mixer: config of the token mixer (``TOKEN_MIXERS``).
        mlp: config of the MLP block (``MLP_BLOCKS``).
        reducers: token-sequence reducers (``TOKEN_REDUCERS``), each with a ``layer`` key: the
            position in ``block_schedule`` (by default the index of the block) it runs before or
            in (see ``vit_blocks``).
        norm_cfg: the blocks' and the final norm, from OpenMMLab's norm registry (e.g.
            ``dict(type='PRepBN')``, SLAB); ``None``: LayerNorm.
        block_schedule: the blocks one forward pass applies, in order, as block indices;
            ``None``: each of the ``depth`` blocks once. A block listed twice runs twice with the
            same weights, e.g. ``[0, ..., 5, 0, ..., 5]`` with a ``TokenLearnerV11`` at
            ``layer=6``: the authors' TokenLearner-8-50, which after the learner runs its first 6
            blocks again. Blocks ``0 .. max(block_schedule)`` are built, each must be listed, and
            block ``i`` keeps the drop path rate of block ``i`` of a ``depth``-block model. An
            ``'after_mixer'`` reducer sits inside its block, so that block must be listed once.
        single_residual: blocks with one residual around mixer and MLP (GFNet's block; ``ViTBlock``).

    ``forward(x)`` returns the features; ``forward(x, return_aux_losses=True)`` returns
    ``(features, {part name: loss})`` with the auxiliary losses of the parts (DynamicViT, A-ViT,
    Switch; ``TokenState.aux_losses``), which ``AuxLossImageClassifier`` adds to its loss.
    """

    has_aux_losses = True

    def __init__(self,
                 arch: Union[str, Mapping] = 'tiny',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 qkv_bias: bool = True,
                 init_values: Optional[float] = 1e-4,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6,
                 with_cls_token: bool = True,
                 out_type: str = 'cls_token',
                 mixer: Mapping = MappingProxyType(dict(type='SoftmaxAttention')),
                 mlp: Mapping = MappingProxyType(dict(type='Mlp')),
                 reducers: Sequence[Mapping] = (),
                 norm_cfg: Optional[Mapping] = None,
                 block_schedule: Optional[Sequence[int]] = None,
                 single_residual: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        size = resolve_arch(arch, VIT_ARCHS)
        self.embed_dim = embed_dim = size['embed_dim']
        self.depth = depth = size['depth']
        if out_type not in ('cls_token', 'avg', 'featmap'):
            raise ValueError(f"out_type must be 'cls_token', 'avg' or 'featmap', got {out_type!r}")
        if out_type == 'featmap' and reducers:
            raise ValueError("out_type='featmap' reshapes the patch tokens to their grid, which token "
                             f"reducers ({', '.join(str(dict(r).get('type')) for r in reducers)}) remove "
                             "or merge; use a ViT without reducers for dense prediction")
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True; use out_type='avg'")
        self.out_type = out_type
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = patch_size
        self.grid_size = check_divisible(self.img_size, patch_size)
        # a plain tuple, not a buffer: the schedule is architecture, so checkpoints stay unchanged
        self.block_schedule = schedule = _check_block_schedule(block_schedule, depth)

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=embed_dim,
            kernel_size=patch_size,
            stride=patch_size,
            padding=0,
            norm_cfg=None)
        self.num_prefix_tokens = int(with_cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if with_cls_token else None
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))  # 1, N, C
        self.pos_drop = nn.Dropout(drop_rate)
        self._register_load_state_dict_pre_hook(self._resize_loaded_pos_embed)

        context = dict(
            embed_dim=embed_dim,
            num_heads=size['num_heads'],
            mlp_ratio=size['mlp_ratio'],
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            num_tokens=num_patches + self.num_prefix_tokens)
        before, inside = {}, {}  # by position in the schedule
        for cfg in reducers:
            cfg = dict(cfg)
            layer = cfg.pop('layer')
            if not 0 <= layer < len(schedule) or layer in before or layer in inside:
                index_kind = 'block index' if block_schedule is None else 'position in block_schedule'
                raise ValueError(f'reducer layer={layer} must be a {index_kind} in [0, {len(schedule)}) '
                                 'holding no other reducer')
            reducer = build_vit_part(TOKEN_REDUCERS, cfg, **context)
            if reducer.position != 'before_block' and schedule.count(schedule[layer]) > 1:
                raise ValueError(f'{type(reducer).__name__} at layer={layer} runs inside block '
                                 f'{schedule[layer]}, which block_schedule applies '
                                 f'{schedule.count(schedule[layer])} times; it would reduce at every one')
            (before if reducer.position == 'before_block' else inside)[layer] = reducer
        self.reducers = nn.ModuleDict({str(layer): reducer for layer, reducer in before.items()})
        inside_by_block = {schedule[layer]: reducer for layer, reducer in inside.items()}
        drop_path_rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear rule
        self.blocks = nn.ModuleList(
            ViTBlock(
                embed_dim,
                mixer=build_vit_part(TOKEN_MIXERS, mixer, **context),
                mlp=build_vit_part(MLP_BLOCKS, mlp, **context),
                init_values=init_values,
                drop_path_rate=drop_path_rates[i],
                norm_eps=norm_eps,
                reducer=inside_by_block.get(i),
                norm_cfg=norm_cfg,
                single_residual=single_residual) for i in range(max(schedule) + 1))
        for layer, reducer in {**before, **inside}.items():  # a keep mask reaches every later block
            for i in schedule[layer:]:
                reducer.check_mixer(self.blocks[i].mixer)
        self.norm = build_token_norm(norm_cfg, embed_dim, norm_eps)

    def train(self, mode: bool = True) -> 'ViTWithMixer':
        # BaseBackbone.train returns None; keep nn.Module's contract so `model.eval()` chains.
        super().train(mode)
        return self

    def init_weights(self):
        super().init_weights()
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            trunc_normal_(self.pos_embed, std=0.02)
            if self.cls_token is not None:
                trunc_normal_(self.cls_token, std=0.02)

    def _resize_loaded_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Resize a checkpoint's position embedding trained at another resolution (224 -> 384)."""
        key = prefix + 'pos_embed'
        if key not in state_dict or state_dict[key].shape == self.pos_embed.shape:
            return
        src_len = state_dict[key].shape[1]
        src_side = math.isqrt(src_len)
        if src_side * src_side != src_len:
            raise ValueError(f'cannot resize a checkpoint pos_embed of {src_len} tokens: '
                             'only square source grids are supported')
        print_log(f'resize {key} from grid {src_side}x{src_side} to {self.grid_size}', logger='current')
        state_dict[key] = resize_pos_embed(
            state_dict[key], (src_side, src_side), self.grid_size, num_extra_tokens=0)

    def pos_embed_for(self, grid: Tuple[int, int]) -> torch.Tensor:
        """Position embedding of a patch grid: the learned one, bicubically resized if needed."""
        if grid == self.grid_size:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, self.grid_size, grid, num_extra_tokens=0)

    def forward_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, TokenState]:
        """Images [B, 3, H, W] -> tokens after the blocks (before the final norm) [B, N', C], and the
        ``TokenState`` the blocks and reducers handed on (its patch grid, its auxiliary losses)."""
        check_divisible(tuple(x.shape[-2:]), self.patch_size)  # a clear error for sizes the patches don't tile
        x, hw = self.patch_embed(x)  # B, N, C
        x = x + self.pos_embed_for(hw)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x)
        state = TokenState.of_patch_grid(hw)
        for layer, i in enumerate(self.block_schedule):
            if str(layer) in self.reducers:
                x, state = self.reducers[str(layer)](x, state)
            x, state = self.blocks[i](x, state)
        return x, state

    def forward_patch_stage(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens of ``forward_tokens`` alone, for callers that read the patch tokens."""
        return self.forward_tokens(x)[0]

    def readout(self, tokens: torch.Tensor, state: TokenState) -> Tuple[torch.Tensor]:
        """Tokens after the blocks -> the backbone's output of ``out_type``."""
        x = self.norm(tokens)
        if self.out_type == 'cls_token':
            return (x[:, 0], )
        patches = x[:, self.num_prefix_tokens:]  # B, N, C
        if self.out_type == 'avg':
            return (patches.mean(dim=1), )
        return (patches.transpose(1, 2).reshape(x.shape[0], -1, *state.hw), )  # B, C, H/p, W/p

    def forward(self, x: torch.Tensor, return_aux_losses: bool = False
                ) -> Union[Tuple[torch.Tensor], Tuple[Tuple[torch.Tensor], Dict[str, torch.Tensor]]]:
        tokens, state = self.forward_tokens(x)
        outs = self.readout(tokens, state)
        return (outs, dict(state.aux_losses)) if return_aux_losses else outs


def _check_block_schedule(block_schedule: Optional[Sequence[int]], depth: int) -> Tuple[int, ...]:
    """``block_schedule`` as a tuple of block indices; ``None``: every block once, in order."""
    if block_schedule is None:
        return tuple(range(depth))
    schedule = tuple(block_schedule) if isinstance(block_schedule, (list, tuple)) else ()
    # type(i) is int: a float or bool index is a typo, not a block
    valid = (schedule and all(type(i) is int and 0 <= i < depth for i in schedule)
             and set(schedule) == set(range(max(schedule) + 1)))
    if not valid:
        raise ValueError(f'block_schedule must be a non-empty list of block indices in [0, {depth}) '
                         'listing every block from 0 to its largest index (blocks never applied would '
                         f'be dead weights), got {block_schedule!r}')
    return schedule
