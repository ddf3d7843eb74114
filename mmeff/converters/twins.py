"""The timm models that have the same architecture as an mmeff config: parity and speed targets.

:data:`TIMM_TWINS` is the one list of them (config, timm model, converter), so that the parity test
(``tests/test_timm_twins.py``), the weight conversion (``tools/convert_timm.py``) and the speed comparisons
(``mmeff.benchmark.twins``, ``tools/analysis/backbone_speed_vs_timm.py``) cover every twin, and no model
file names a config. :data:`RELATIVE_TOLERANCE` and :func:`parity_problems` are the one parity criterion
the test and the conversion tool apply.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List

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

    @property
    def tolerance(self) -> float:
        """The largest max |logit diff| / std of timm's logits the pair may have (its architecture's)."""
        return RELATIVE_TOLERANCE[self.arch]


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


# max |logit diff| / std of timm's logits, per architecture: ~10x the largest over its registered
# variants (in the comments; float32, tests/helpers/timm_parity.randomize_scaled_ weights), at least 1e-5.
RELATIVE_TOLERANCE = dict(
    vit=1e-5,                # 0 (bitwise equal)
    cait=2e-5,               # 1.3e-6
    swin=2e-5,               # 1.2e-6
    swinv2=2e-5,             # 1.2e-6
    xcit=2e-5,               # 1.6e-6
    mixer=1e-4,              # 7.9e-6
    resnet=1e-5,             # 0
    efficientformerv2=2e-5,  # 1.3e-6
    # 1.3e-4 (fastvit_t12, others <= 2.1e-5): float32 rounding, not a mismatch: each side differs
    # from its float64 self by 1e-4..2e-4 of the std, and the two agree in float64 to 3e-13.
    fastvit=2e-3,
    swiftformer=2e-5,        # 1.2e-6
    nextvit=1e-5,            # 0
    focalnet=2e-4,           # 1.3e-5
    efficientvit=1e-4,       # 7.9e-6 (the L models; the B models 0)
    coat=1e-4,               # 5.3e-6
)
# Below these the comparison says nothing: logits ~constant (std < MIN_SPREAD), or the same for every
# image (std of two images' difference < MIN_SIGNAL x the spread, e.g. weights that zero the features,
# where the logits are the head's bias and any backbone would pass).
MIN_SPREAD = 0.1  # measured >= 0.38 (mixer_b16)
MIN_SIGNAL = 1e-3  # of the spread; measured >= 0.0095 (efficientvit_b0), 1e-7..0 with randomize_'s weights


def compare_logits(reference: torch.nn.Module, model: torch.nn.Module, images: torch.Tensor) -> dict:
    """timm model ``reference`` and mmeff classifier ``model`` (both in eval mode) on ``images`` (a batch of
    at least 2): ``diff``, the max |logit difference|; ``spread``, the std of timm's logits; ``signal``, the
    std of the difference between the first two images' timm logits (how much the logits depend on the
    input)."""
    with torch.no_grad():
        expected, actual = reference(images), model(images, mode='tensor')
    if expected.shape != actual.shape:
        raise ValueError(f'timm gives logits of shape {tuple(expected.shape)}, mmeff {tuple(actual.shape)}')
    return dict(diff=(expected - actual).abs().max().item(), spread=expected.std().item(),
                signal=(expected[0] - expected[1]).std().item())


def parity_problems(twin: TimmTwin, result: dict) -> List[str]:
    """Why :func:`compare_logits`' ``result`` does not show the pair computing the same function (empty
    when it does): a diff above ``twin.tolerance`` x the spread, or logits that do not depend on the input."""
    problems = []
    if not result['spread'] >= MIN_SPREAD:
        problems.append(f"timm's logits are ~constant (std {result['spread']:.3e} < {MIN_SPREAD})")
    elif not result['signal'] >= MIN_SIGNAL * result['spread']:
        problems.append(f"timm's logits do not depend on the input (two images' logits differ by std "
                        f"{result['signal']:.3e} < {MIN_SIGNAL} x the logit std {result['spread']:.3e})")
    if not result['diff'] <= twin.tolerance * result['spread']:
        problems.append(f"max |logit diff| {result['diff']:.3e} > {twin.tolerance:g} x the logit std "
                        f"{result['spread']:.3e} = {twin.tolerance * result['spread']:.3e}")
    return problems


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
