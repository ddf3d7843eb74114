"""The parts of the isotropic ViT skeleton and the registries of the parts an architecture swaps.

Which Transformer to Favor (Nauen et al., WACV 2025, https://arxiv.org/abs/2308.09372) sorts
efficient ViTs by the one part of ViT they change. The skeleton (``ViTWithMixer``) therefore builds
three kinds of parts from registries:

- ``TOKEN_MIXERS``: ``forward(x: [B, N, C], hw) -> [B, N, C]`` (attention and its replacements),
- ``MLP_BLOCKS``: ``forward(x: [B, N, C]) -> [B, N, C]`` (the channel MLP and e.g. mixtures of experts),
- ``TOKEN_REDUCERS``: ``forward(x: [B, N, C], hw, mixer, state) -> ([B, N', C], hw')``, run
  before a block (``position = 'before_block'``, e.g. DynamicViT) or inside it between the mixer
  and the MLP (``position = 'after_mixer'``, e.g. EViT, ToMe, whose scores come from the block's
  attention: the block then sets ``mixer.cache_qk``). ``state`` is a dict shared by the reducers
  and blocks of one forward pass (ToMe's token sizes; DynamicViT's training-time ``keep`` mask,
  which the blocks pass to their mixer); ``hw`` becomes ``None`` once tokens leave the grid.

The skeleton offers every part its context (``embed_dim``, ``num_heads``, ``qkv_bias``,
``mlp_ratio``, ``grid_size``, ``num_prefix_tokens``, ``num_tokens``, ...); a part receives the
entries its constructor names, so each part declares only what its paper needs.
"""
import inspect
from typing import Dict, Mapping, Optional, Tuple, Type

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.registry import MODELS, Registry
from mmpretrain.models.utils import LayerScale
from torch import nn

from .reparam import Reparameterizable

TOKEN_MIXERS = Registry('token mixer', scope='mmeff')
MLP_BLOCKS = Registry('mlp block', scope='mmeff')
TOKEN_REDUCERS = Registry('token reducer', scope='mmeff')

HW = Optional[Tuple[int, int]]


def build_vit_part(registry: Registry, cfg: dict, **context) -> nn.Module:
    """Build ``cfg`` from ``registry``, passing the ``context`` entries its constructor accepts.

    Keys given in ``cfg`` win over the context (e.g. ``num_heads`` of a mixer). Plain
    ``Registry.build`` doesn't fit: it would pass every context key to every part.
    """
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    part_cls = registry.get(name) if isinstance(name, str) else name
    if part_cls is None:
        raise KeyError(f'unknown {registry.name} type={name!r}; known types: '
                       f'{", ".join(sorted(registry.module_dict))}')
    params = inspect.signature(part_cls).parameters
    offered = {k: v for k, v in context.items() if k in params}
    return part_cls(**{**offered, **cfg})


def build_token_norm(norm_cfg: Optional[Mapping], embed_dim: int, eps: float) -> nn.Module:
    """The skeleton's normalization of tokens [B, N, C]: LayerNorm when ``norm_cfg`` is None, else a
    norm from OpenMMLab's norm registry (mmcv's ``build_norm_layer``), e.g. SLAB's ``'PRepBN'``.

    ``eps`` (the skeleton's ``norm_eps``) is the default of the config's ``eps``.
    """
    if norm_cfg is None:
        return nn.LayerNorm(embed_dim, eps=eps)
    cfg = dict(norm_cfg)
    name = cfg.get('type')
    if isinstance(name, str):
        with MODELS.switch_scope_and_registry(None) as registry:
            cfg['type'] = registry.get(name)
        if cfg['type'] is None:
            raise KeyError(f'unknown norm type={name!r}; token norms: LN, RepBN, PRepBN (mmcv norm registry)')
    cfg.setdefault('eps', eps)
    return build_norm_layer(cfg, embed_dim)[1]


@MLP_BLOCKS.register_module()
class Mlp(nn.Module):
    """The transformer's two-layer GELU MLP (Vaswani et al., https://arxiv.org/abs/1706.03762).

    mmcv's ``FFN`` adds the residual itself; here the block owns the residual and LayerScale.
    ``linear_layer`` is an ``nn.Linear`` (sub)class, e.g. one specialised to the model's token layout.
    """

    def __init__(self, embed_dim: int, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 linear_layer: Type[nn.Linear] = nn.Linear):
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.fc1 = linear_layer(embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = linear_layer(hidden, embed_dim)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ViTBlock(nn.Module, Reparameterizable):
    """A pre-norm transformer block whose token mixer and MLP are registered parts.

    The norms are LayerNorms, or ``norm_cfg`` from the norm registry (``build_token_norm``).

    ``x = x + drop_path(ls1(mixer(norm1(x), hw)))``, then the MLP the same way; LayerScale
    (CaiT, https://arxiv.org/abs/2103.17239) when ``init_values`` is set.
    """

    def __init__(self,
                 embed_dim: int,
                 mixer: nn.Module,
                 mlp: nn.Module,
                 init_values: Optional[float] = 1e-4,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6,
                 reducer: Optional[nn.Module] = None,
                 norm_cfg: Optional[Mapping] = None):
        super().__init__()
        self.norm1 = build_token_norm(norm_cfg, embed_dim, norm_eps)
        self.mixer = mixer
        self.ls1 = self._layer_scale(embed_dim, init_values)
        self.norm2 = build_token_norm(norm_cfg, embed_dim, norm_eps)
        self.mlp = mlp
        self.ls2 = self._layer_scale(embed_dim, init_values)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.reducer = reducer
        if reducer is not None:
            if not hasattr(mixer, 'cache_qk'):
                raise ValueError(f'{type(reducer).__name__} scores tokens with the attention of the '
                                 f'block, which {type(mixer).__name__} does not expose; use SoftmaxAttention')
            mixer.cache_qk = True

    def switch_to_deploy(self) -> None:
        """Fold norms that are affine at inference (SLAB's PRepBN: ``fold_into``) into the linear layer
        reading them: the mixer's ``qkv`` (attention-like mixers read their input only through it)
        and the MLP's ``fc1``."""
        for name, linear in (('norm1', getattr(self.mixer, 'qkv', None)), ('norm2', getattr(self.mlp, 'fc1', None))):
            norm = getattr(self, name)
            if hasattr(norm, 'fold_into') and isinstance(linear, nn.Linear):
                norm.fold_into(linear)
                setattr(self, name, nn.Identity())

    @staticmethod
    def _layer_scale(embed_dim: int, init_values: Optional[float]) -> nn.Module:
        return LayerScale(embed_dim, layer_scale_init_value=init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, hw: HW, state: Optional[Dict] = None) -> Tuple[torch.Tensor, HW]:
        # a DynamicViT predictor in training masks dropped tokens instead of removing them
        keep = state.get('keep') if state else None
        mixed = self.mixer(self.norm1(x), hw) if keep is None else self.mixer(self.norm1(x), hw, keep=keep)
        x = x + self.drop_path(self.ls1(mixed))
        if self.reducer is not None:
            x, hw = self.reducer(x, hw, self.mixer, state)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x)))), hw
