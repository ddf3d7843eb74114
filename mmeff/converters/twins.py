"""The timm models that have the same architecture as an mmeff config: parity and speed targets.

:data:`TIMM_TWINS` is the one list of them (config, timm model, converter), so that the parity test
(``tests/test_timm_twins.py``) and the speed comparisons (``mmeff.benchmark.twins``,
``tools/analysis/backbone_speed_vs_timm.py``) cover every twin, and no model file names a config.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict

import torch
from mmengine.config import Config

from mmeff.paths import config_path
from mmeff.registry import CLS_MODELS

from .rename import StateDict
from .timm import (
    timm_cait_to_mmeff,
    timm_coat_to_mmeff,
    timm_efficientformerv2_to_mmeff,
    timm_efficientvit_mit_to_mmeff,
    timm_fastvit_to_mmeff,
    timm_focalnet_to_mmeff,
    timm_mixer_to_mmeff,
    timm_nextvit_to_mmeff,
    timm_resnet_to_mmeff,
    timm_swiftformer_to_mmeff,
    timm_swin_to_mmeff,
    timm_swinv2_to_mmeff,
    timm_vit_to_mmeff,
    timm_xcit_to_mmeff,
)


@dataclass(frozen=True)
class TimmTwin:
    """An mmeff classifier config and the timm model it matches weight for weight."""
    arch: str  # architecture family, e.g. 'swin'
    config: str  # path under configs/, e.g. 'hvit/swin/swin_tiny_p4_w7_in1k-224.py'
    timm_name: str
    convert: Callable[[StateDict], dict]  # timm state dict -> mmeff ImageClassifier state dict
    timm_kwargs: Dict[str, object] = field(default_factory=dict)
    img_size: int = 224


# One row a family: arch, config (under configs/) and timm name with '{}' for each size (smallest first),
# converter, timm.create_model kwargs.
_FAMILIES = (
    # timm has no DeiT III ViT-Ti: these kwargs give its ViT-Ti DeiT III's layout (no class token in the
    # position embedding, LayerScale), which mmeff's ViT has
    ('vit', 'vit/vit/vit_{}_p16_in1k-224.py', 'vit_{}_patch16_224', timm_vit_to_mmeff, ['tiny'],
     dict(no_embed_class=True, init_values=1e-4)),
    ('vit', 'vit/vit/vit_{}_p16_in1k-224.py', 'deit3_{}_patch16_224', timm_vit_to_mmeff, ['small', 'base'], {}),
    ('cait', 'vit/cait/cait_{}_p16_in1k-224.py', 'cait_{}_224', timm_cait_to_mmeff, ['xxs24', 's24'], {}),
    ('swin', 'hvit/swin/swin_{}_p4_w7_in1k-224.py', 'swin_{}_patch4_window7_224', timm_swin_to_mmeff,
     ['tiny', 'small', 'base'], {}),
    # timm has V2 at window 8 / 256 px only; the same model with the V1 window at 224 px is the twin (its
    # input size is set through the pretrained config, since `TimmTwin.img_size` is the test's)
    ('swinv2', 'hvit/swinv2/swinv2_{}_w7_in1k-224.py', 'swinv2_{}_window8_256', timm_swinv2_to_mmeff,
     ['tiny', 'small', 'base'], dict(window_size=7, pretrained_cfg_overlay=dict(input_size=(3, 224, 224)))),
    ('xcit', 'hvit/xcit/xcit_{}_p16_in1k-224.py', 'xcit_{}_p16_224', timm_xcit_to_mmeff,
     ['nano_12', 'tiny_12', 'tiny_24', 'small_12', 'small_24', 'medium_24'], {}),
    ('mixer', 'hvit/mixer/mixer_{}_in1k-224.py', 'mixer_{}_224', timm_mixer_to_mmeff, ['s16', 's32', 'b16', 'b32'],
     {}),
    ('resnet', 'hvit/resnet/{}_in1k-224.py', '{}', timm_resnet_to_mmeff,
     ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'wide_resnet50_2'], {}),
    ('efficientformerv2', 'hvit/efficientformerv2/efficientformerv2_{}_in1k-224.py', 'efficientformerv2_{}',
     timm_efficientformerv2_to_mmeff, ['s0', 's1', 's2', 'l'], {}),
    ('fastvit', 'hvit/fastvit/fastvit_{}_in1k-224.py', 'fastvit_{}', timm_fastvit_to_mmeff,
     ['t8', 't12', 's12', 'sa12', 'sa24', 'sa36', 'ma36'], {}),
    ('swiftformer', 'hvit/swiftformer/swiftformer_{}_in1k-224.py', 'swiftformer_{}', timm_swiftformer_to_mmeff,
     ['xs', 's', 'l1', 'l3'], {}),
    ('nextvit', 'hvit/nextvit/nextvit_{}_in1k-224.py', 'nextvit_{}', timm_nextvit_to_mmeff,
     ['small', 'base', 'large'], {}),
    ('focalnet', 'hvit/focalnet/focalnet_{}_in1k-224.py', 'focalnet_{}', timm_focalnet_to_mmeff,
     ['tiny_srf', 'tiny_lrf', 'small_srf', 'small_lrf', 'base_srf', 'base_lrf'], {}),
    ('efficientvit', 'hvit/efficientvit/efficientvit_{}_in1k-224.py', 'efficientvit_{}',
     timm_efficientvit_mit_to_mmeff, ['b0', 'b1', 'b2', 'b3', 'l1', 'l2'], {}),
    ('coat', 'hvit/coat/coat_{}_in1k-224.py', 'coat_{}', timm_coat_to_mmeff,
     ['tiny', 'mini', 'small', 'lite_tiny', 'lite_mini', 'lite_small'], {}),
)


def _twins() -> Dict[str, TimmTwin]:
    """Every row of :data:`_FAMILIES`, one twin a size, by config (one twin per config)."""
    twins = {}
    for arch, config, timm_name, convert, sizes, timm_kwargs in _FAMILIES:
        for size in sizes:
            twin = TimmTwin(arch, config.format(size), timm_name.format(size), convert, dict(timm_kwargs))
            if twin.config in twins:
                raise KeyError(f'{twin.config} already has a timm twin ({twins[twin.config].timm_name})')
            twins[twin.config] = twin
    return twins


TIMM_TWINS: Dict[str, TimmTwin] = _twins()  # config -> twin, in the order of _FAMILIES


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
