"""The parts of the isotropic ViT skeleton, the contracts between them, and their registries.

Which Transformer to Favor (Nauen et al., WACV 2025, https://arxiv.org/abs/2308.09372) sorts
efficient ViTs by the one part of ViT they change. The skeleton (``ViTWithMixer``) therefore builds
three kinds of parts from registries, each kind with one base class that states its contract:

- ``TOKEN_MIXERS`` (``TokenMixer``): ``forward(x: [B, N, C], hw) -> [B, N, C]``, attention and its
  replacements. A mixer declares what more it offers: its queries and keys (``provides_query_key``)
  and attention that ignores masked-out tokens (``supports_keep_mask``).
- ``MLP_BLOCKS`` (``MlpBlock``): ``forward(x: [B, N, C]) -> [B, N, C]``, the channel MLP and e.g.
  mixtures of experts; one with a training objective of its own declares ``has_aux_loss``.
- ``TOKEN_REDUCERS`` (``TokenReducer``): ``forward(x: [B, N, C], state, query_key) -> ([B, N', C],
  state)``, run before a block (``position = 'before_block'``, e.g. DynamicViT) or inside it between
  the mixer and the MLP (``position = 'after_mixer'``, e.g. EViT, ToMe). A reducer declares what it
  needs from the mixers (``needs_query_key``, ``masks_tokens``) and refuses, when the model is built,
  a mixer that does not offer it.

What a forward pass knows about its tokens besides their values (patch grid, keep mask, ToMe token
sizes, A-ViT halting scores, auxiliary losses) is a ``TokenState``, handed from block to block and
reducer to reducer; a part returns an updated copy instead of changing shared state.

The skeleton offers every part its context (``embed_dim``, ``num_heads``, ``qkv_bias``,
``mlp_ratio``, ``grid_size``, ``num_prefix_tokens``, ``num_tokens``, ...); a part receives the
entries its constructor names, so each part declares only what its paper needs.
"""
import dataclasses
import inspect
from types import MappingProxyType
from typing import Mapping, Optional, Tuple, Type

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


@dataclasses.dataclass(frozen=True, eq=False)
class TokenState:
    """What one forward pass knows about its token sequence ``[B, N, C]`` besides the tokens.

    Frozen: a part that changes it returns a new state (``dataclasses.replace``), so every state
    belongs to one point of the pass and nothing is shared between passes.

    Attributes:
        hw: the patch grid of the patch tokens; ``None`` once a reducer removed or merged tokens.
        num_input_patches: patch tokens of the input, before any reduction (DynamicViT's keep
            ratios are fractions of it).
        keep_mask: ``[B, N]``, 1 for tokens in the sequence, 0 for tokens masked out of the
            attention of later blocks (DynamicViT in training, A-ViT); ``None``: no token masked.
        halting_scores: ``[B, N]``, A-ViT's cumulative halting score of every token.
        token_sizes: ``[B, N, 1]``, ToMe's count of the patches each token stands for.
        aux_losses: auxiliary training losses of the parts the tokens passed, by part class name,
            summed over the layers of one class (DynamicViT's ratio loss, A-ViT's ponder loss,
            Switch's load balancing).
    """

    hw: HW
    num_input_patches: Optional[int] = None
    keep_mask: Optional[torch.Tensor] = None
    halting_scores: Optional[torch.Tensor] = None
    token_sizes: Optional[torch.Tensor] = None
    aux_losses: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of_patch_grid(cls, hw: Tuple[int, int]) -> 'TokenState':
        """The state of freshly embedded patches on grid ``hw``."""
        return cls(hw=hw, num_input_patches=hw[0] * hw[1])

    def with_aux_loss(self, name: str, loss: torch.Tensor) -> 'TokenState':
        """This state with ``loss`` added to the auxiliary loss ``name``."""
        losses = dict(self.aux_losses)
        losses[name] = losses[name] + loss if name in losses else loss
        return dataclasses.replace(self, aux_losses=MappingProxyType(losses))


@dataclasses.dataclass(frozen=True, eq=False)
class QueryKey:
    """Queries and keys of a mixer's attention, ``[B, heads, N, head_dim]`` each, and its logit scale."""

    q: torch.Tensor
    k: torch.Tensor
    scale: float


class TokenMixer(nn.Module):
    """Base of the token mixers: ``forward(x: [B, N, C], hw) -> [B, N, C]``.

    A mixer declares here what it offers besides mixing, so that a part needing more refuses it when
    the model is built instead of failing or silently doing less in a forward pass:

    - ``provides_query_key``: ``forward(x, hw, return_query_key=True)`` returns ``(out, QueryKey)``,
      the queries and keys its attention weights come from (EViT's class attention, ToMe's key
      similarity).
    - ``supports_keep_mask``: ``forward(x, hw, keep_mask=m)`` with ``m`` ``[B, N]`` of 0s and 1s
      attends to the keys of the tokens with ``m = 1`` only, keeping ``m``'s (straight-through)
      gradient: tokens are masked out instead of removed, so the batch keeps one sequence length.
    """

    provides_query_key = False
    supports_keep_mask = False


class TokenReducer(nn.Module):
    """Base of the token reducers: ``forward(x: [B, N, C], state, query_key) -> ([B, N', C], state)``.

    ``position``: ``'before_block'`` (the reducer runs before the block of its ``layer``) or
    ``'after_mixer'`` (inside that block, between the mixer and the MLP; it gets the mixer's
    ``QueryKey`` when it ``needs_query_key``, else ``None``). The class token stays in front.

    What a reducer needs from the mixers it works with:

    - ``needs_query_key``: it scores tokens with the queries and keys of its block's mixer;
    - ``masks_tokens``: it sets ``state.keep_mask``, which the mixers of later blocks must honour.
    """

    position = 'before_block'
    needs_query_key = False
    masks_tokens = False

    def check_mixer(self, mixer: TokenMixer) -> None:
        """Refuse, when the model is built, a mixer that does not offer what this reducer needs."""
        if self.needs_query_key and not mixer.provides_query_key:
            self._refuse(mixer, "scores tokens with the queries and keys of its block's attention",
                         'provides_query_key')
        if self.masks_tokens and not mixer.supports_keep_mask:
            self._refuse(mixer, 'masks tokens out of the attention of later blocks', 'supports_keep_mask')

    def _refuse(self, mixer: TokenMixer, need: str, capability: str) -> None:
        offering = sorted(name for name, cls in TOKEN_MIXERS.module_dict.items() if getattr(cls, capability))
        raise ValueError(f'{type(self).__name__} {need}, which {type(mixer).__name__} does not offer '
                         f'({capability}); use {" or ".join(offering)}')

    def forward(self, x: torch.Tensor, state: TokenState,
                query_key: Optional[QueryKey] = None) -> Tuple[torch.Tensor, TokenState]:
        raise NotImplementedError


class MlpBlock(nn.Module):
    """Base of the MLP blocks: ``forward(x: [B, N, C]) -> [B, N, C]``.

    ``has_aux_loss``: the block trains with an objective of its own (Switch's load balancing) and
    ``forward(x, return_aux_loss=True)`` returns ``(out, loss)``; the ViT block adds the loss to the
    ``TokenState``.
    """

    has_aux_loss = False


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
class Mlp(MlpBlock):
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
    (CaiT, https://arxiv.org/abs/2103.17239) when ``init_values`` is set. An ``'after_mixer'``
    ``reducer`` runs between the two, with the mixer's ``QueryKey`` if it needs it.
    ``single_residual``: GFNet's block (https://arxiv.org/abs/2107.00645), one residual around both,
    ``x = x + drop_path(ls2(mlp(norm2(mixer(norm1(x), hw)))))``; it has no ``ls1`` and no reducer. The block passes
    the ``TokenState``'s keep mask to its mixer and adds its MLP's auxiliary loss to the state.

    ``mixer`` is a ``TokenMixer``; a hierarchical backbone may pass any module mixing tokens as
    ``forward(x, hw)``, as long as no reducer or keep mask asks more of it.
    """

    def __init__(self,
                 embed_dim: int,
                 mixer: nn.Module,
                 mlp: MlpBlock,
                 init_values: Optional[float] = 1e-4,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6,
                 reducer: Optional[TokenReducer] = None,
                 norm_cfg: Optional[Mapping] = None,
                 single_residual: bool = False):
        super().__init__()
        if single_residual and reducer is not None:
            raise ValueError(f'{type(reducer).__name__} runs between the mixer and the MLP, which a '
                             'single-residual block (single_residual=True, GFNet) does not separate')
        self.single_residual = single_residual
        self.norm1 = build_token_norm(norm_cfg, embed_dim, norm_eps)
        self.mixer = mixer
        self.ls1 = nn.Identity() if single_residual else self._layer_scale(embed_dim, init_values)
        self.norm2 = build_token_norm(norm_cfg, embed_dim, norm_eps)
        self.mlp = mlp
        self.ls2 = self._layer_scale(embed_dim, init_values)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.reducer = reducer
        if reducer is not None:
            reducer.check_mixer(mixer)
        self.reducer_needs_query_key = reducer is not None and reducer.needs_query_key

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

    def mix(self, x: torch.Tensor, state: TokenState) -> Tuple[torch.Tensor, Optional[QueryKey]]:
        """The mixer's output for the normed tokens ``x``, and its ``QueryKey`` if the reducer needs it.

        A keep mask in ``state`` comes from a reducer that was checked, at build time, against this
        mixer's ``supports_keep_mask``; the same for ``provides_query_key``.
        """
        masking = {} if state.keep_mask is None else dict(keep_mask=state.keep_mask)
        if self.reducer_needs_query_key:
            return self.mixer(x, state.hw, return_query_key=True, **masking)
        return self.mixer(x, state.hw, **masking), None

    def forward(self, x: torch.Tensor, state: TokenState) -> Tuple[torch.Tensor, TokenState]:
        mixed, query_key = self.mix(self.norm1(x), state)
        if self.single_residual:
            return self.add_mlp(x, mixed, state)
        x = x + self.drop_path(self.ls1(mixed))
        if self.reducer is not None:
            x, state = self.reducer(x, state, query_key)
        return self.add_mlp(x, x, state)

    def add_mlp(self, residual: torch.Tensor, x: torch.Tensor, state: TokenState) -> Tuple[torch.Tensor, TokenState]:
        """``residual + drop_path(ls2(mlp(norm2(x))))``, the MLP's auxiliary loss added to ``state``."""
        if self.mlp.has_aux_loss:
            out, loss = self.mlp(self.norm2(x), return_aux_loss=True)
            state = state.with_aux_loss(type(self.mlp).__name__, loss)
        else:
            out = self.mlp(self.norm2(x))
        return residual + self.drop_path(self.ls2(out)), state
