"""The timm models that have the same architecture as an mmeff config: parity and speed targets.

Each architecture module registers its twins next to its weight converter, so that the parity test
(`tests/test_timm_twins.py`) and the speed comparison (`tools/analysis/backbone_speed_vs_timm.py`)
cover every twin without a list of their own.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping

import torch
from mmengine.config import Config

from mmeff.paths import config_path
from mmeff.registry import CLS_MODELS

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class TimmTwin:
    """An mmeff classifier config and the timm model it matches weight for weight."""
    arch: str  # architecture family, e.g. 'swin'
    config: str  # path under configs/, e.g. 'hvit/swin/swin_tiny_p4_w7_in1k-224.py'
    timm_name: str
    convert: Callable[[StateDict], dict]  # timm state dict -> mmeff ImageClassifier state dict
    timm_kwargs: Dict[str, object] = field(default_factory=dict)
    img_size: int = 224


TIMM_TWINS: Dict[str, TimmTwin] = {}


def register_timm_twin(arch: str, config: str, timm_name: str, convert: Callable[[StateDict], dict],
                       img_size: int = 224, **timm_kwargs) -> None:
    """Record that ``timm.create_model(timm_name, **timm_kwargs)`` is the twin of ``config``."""
    if config in TIMM_TWINS:
        raise KeyError(f'{config} already has a timm twin ({TIMM_TWINS[config].timm_name})')
    TIMM_TWINS[config] = TimmTwin(arch, config, timm_name, convert, dict(timm_kwargs), img_size)


def create_timm_model(twin: TimmTwin) -> torch.nn.Module:
    """The timm side of a twin pair, random weights, eval mode."""
    import timm
    return timm.create_model(twin.timm_name, pretrained=False, num_classes=1000, **twin.timm_kwargs).eval()


def build_like_timm(twin: TimmTwin, reference: torch.nn.Module) -> torch.nn.Module:
    """The mmeff classifier of ``twin.config`` with ``reference``'s weights, eval mode (call inside
    the mmpretrain scope)."""
    model = CLS_MODELS.build(Config.fromfile(config_path(twin.config)).model)
    model.load_state_dict(twin.convert(reference.state_dict()), strict=True)
    return model.eval()
