"""The base of every hierarchical (multi-stage) backbone in mmeff.

A hierarchical backbone is a stem, then stages that each shrink the map, returning the maps of the
stages in ``out_indices`` (a detection neck's input, or the last one for a classifier). What every
such model used to write for itself lives here once; a backbone file then holds its blocks and its
size table. mmengine's ``BaseModule`` is the parent (not MMPretrain's ``BaseBackbone``, whose
``train()`` returns None and which adds nothing else), so ``init_cfg`` works as everywhere in OpenMMLab.
"""
from typing import Any, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

from mmdet.models.layers import FrozenBatchNorm2d
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..layers.pyramid import check_input_size, check_out_indices, read_only, resolve_arch, stage_drop_path_rates


class PyramidStage(nn.Module):
    """A stage that is a downsampling (patch embedding; none by default) and then blocks in sequence,
    under the state-dict names ``downsample`` and ``blocks``."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.downsample = nn.Identity() if downsample is None else downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class PyramidBackbone(BaseModule):
    """Stem -> stages -> the outputs of ``out_indices``, with the contract every mmeff backbone keeps.

    The contract (checked for every registered backbone by ``tests/test_backbone_interface.py``):

    - ``arch_zoo``: the size table ``{name: dict of sizes}``, smallest first, made read-only when the
      class is created; :meth:`resolve_arch` looks a name up (one error listing the valid names) or
      takes a custom dict with the same keys.
    - ``out_indices``: :meth:`set_out_indices` validates them (ValueError, one message; negative
      indices count from the last stage) and stores them sorted, the order of the outputs. With it
      ``out_type``, one of the class's ``out_types``: ``'featmap'`` returns maps; any other makes the
      last stage's output a vector (a class token or pooled feature: a classifier's input), so
      ``out_indices`` must then include the last stage.
    - ``out_channels`` / ``out_strides``: one entry per output (:meth:`set_stage_features`); the stride
      is None where the output is a vector.
    - drop path: :meth:`drop_path_schedule`, linear from 0 to the rate over all blocks.
    - ``forward``: ``forward_stem``, then ``forward_stage(i, x)`` up to the last index of
      ``out_indices``, returning ``forward_out(i, x)`` for each of them. What a stage passes on is the
      model's business (a NCHW map, a channels-last map, a (map, class token) pair); ``forward_out``
      makes the returned output of it (e.g. the final norm of the last stage, a permute to NCHW).
      Inputs are checked first against ``input_multiple`` and ``min_input_size``.
    - freezing: :meth:`freeze` with RT-DETR's ``freeze_at`` (-1 nothing, 0 the stem, k the stem and the
      first k stages: ``requires_grad=False`` and eval mode, kept by ``train()``) and ``freeze_norm``
      (every BatchNorm2d becomes mmdet's ``FrozenBatchNorm2d``). ``stem_parts()`` and
      ``stage_parts(i)`` name the modules frozen; override them where a stage is spread over lists.
    - ``train()`` returns ``self``.

    A subclass ``__init__`` therefore reads::

        super().__init__(init_cfg=init_cfg)
        size = self.resolve_arch(arch)
        self.set_out_indices(out_indices, num_stages=4, out_type=out_type)
        rates = self.drop_path_schedule(drop_path_rate, size['depths'])
        self.stem, self.stages = ..., nn.ModuleList(...)
        self.set_stage_features(channels=size['embed_dims'], strides=(4, 8, 16, 32))
        self.freeze(freeze_at, freeze_norm)
    """
    arch_zoo: Mapping[Hashable, Mapping] = {}
    out_types: Tuple[str, ...] = ('featmap', )
    out_type: str = 'featmap'
    input_multiple: int = 1  # input height and width must be multiples of this (exact strides)
    min_input_size: int = 1
    freeze_at: int = -1
    out_indices: Tuple[int, ...]
    num_stages: int
    out_channels: List[int]
    out_strides: List[Optional[int]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if 'arch_zoo' in cls.__dict__:
            cls.arch_zoo = read_only(cls.arch_zoo)

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def resolve_arch(cls, arch: Union[Hashable, Mapping], key: str = 'arch') -> dict:
        """A copy of the size ``arch`` names in ``arch_zoo``, or of a custom dict with the same keys."""
        return resolve_arch(arch, cls.arch_zoo, cls.__name__, key)

    def set_out_indices(self, out_indices: Union[int, Sequence[int]], num_stages: int,
                        out_type: str = 'featmap') -> Tuple[int, ...]:
        """Validate and store ``out_indices``, ``num_stages`` and ``out_type``; returns the indices."""
        name = type(self).__name__
        if out_type not in self.out_types:
            raise ValueError(f"{name} out_type must be {' or '.join(map(repr, self.out_types))}, got {out_type!r}")
        self.num_stages, self.out_type = num_stages, out_type
        self.out_indices = check_out_indices(out_indices, num_stages, name)
        if out_type != 'featmap' and num_stages - 1 not in self.out_indices:
            raise ValueError(f"{name} out_type={out_type!r} replaces the last stage's map by a vector: "
                             f'out_indices must include {num_stages - 1}, got {self.out_indices}')
        return self.out_indices

    def returns_vector(self, i: int) -> bool:
        """Whether the output of stage ``i`` is a vector (the last one, unless ``out_type='featmap'``)."""
        return self.out_type != 'featmap' and i == self.num_stages - 1

    @staticmethod
    def drop_path_schedule(drop_path_rate: float, depths: Sequence[int]) -> List[List[float]]:
        """Per stage, the stochastic-depth rates of its blocks: linear from 0 to ``drop_path_rate``
        over all ``sum(depths)`` blocks (plain floats: the model also builds on the meta device)."""
        return stage_drop_path_rates(drop_path_rate, depths)

    def set_stage_features(self, channels: Sequence[int], strides: Sequence[Optional[int]]) -> None:
        """``out_channels`` / ``out_strides`` of the outputs, from those of every stage (the stride of a
        vector output is None)."""
        self.out_channels = [channels[i] for i in self.out_indices]
        self.out_strides = [None if self.returns_vector(i) else strides[i] for i in self.out_indices]

    def freeze(self, freeze_at: int = -1, freeze_norm: bool = False) -> None:
        """Freeze the stem (``freeze_at >= 0``) and the first ``freeze_at`` stages; ``freeze_norm``
        turns every BatchNorm2d into a ``FrozenBatchNorm2d`` (buffers only, no statistics update)."""
        if not -1 <= freeze_at <= self.num_stages:
            raise ValueError(f'{type(self).__name__} freeze_at must be -1 (nothing), 0 (the stem) or '
                             f'1..{self.num_stages} (the stem and that many stages), got {freeze_at}')
        self.freeze_at = freeze_at
        if freeze_norm:
            FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    # ---- the parts frozen -------------------------------------------------------------------------
    def stem_parts(self) -> List[nn.Module]:
        stem = getattr(self, 'stem', None)
        return [] if stem is None else [stem]

    def stage_parts(self, i: int) -> List[nn.Module]:
        return [self.stages[i]]

    def frozen_modules(self) -> List[nn.Module]:
        if self.freeze_at < 0:
            return []
        return [*self.stem_parts(), *(m for i in range(self.freeze_at) for m in self.stage_parts(i))]

    def train(self, mode: bool = True) -> 'PyramidBackbone':
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    # ---- forward ----------------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        check_input_size(x, type(self).__name__, self.input_multiple, self.min_input_size)

    def forward_stem(self, x: Tensor) -> Any:
        stem = getattr(self, 'stem', None)
        return x if stem is None else stem(x)

    def forward_stage(self, i: int, x: Any) -> Any:
        return self.stages[i](x)

    def forward_out(self, i: int, x: Any) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        self.check_input(x)
        x = self.forward_stem(x)
        outs = []
        for i in range(self.out_indices[-1] + 1):  # the stages after the last output are not needed
            x = self.forward_stage(i, x)
            if i in self.out_indices:
                outs.append(self.forward_out(i, x))
        return tuple(outs)
