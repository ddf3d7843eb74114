"""timm twins of the MMPretrain 1.2 backbones that "Which Transformer to Favor" (arXiv 2308.09372) uses as
they are: Swin, Swin V2, XCiT, MLP-Mixer and ResNet.

mmeff does not re-implement these models: the configs build MMPretrain's ``SwinTransformer``, ``MlpMixer``
and ``XCiT`` (as ``LeanSwinTransformer``, ``LeanMlpMixer`` and ``LeanXCiT``: the same models without per-call
overheads, see ``mmpretrain_lean.py``), ``SwinTransformerV2`` (as ``SwinTransformerV2Strict``, see
``swin_v2.py``) and ``ResNet``. This module maps timm's weights onto them (renames, plus the one layout
difference: the channel order of Swin's 2x2 patch merging) and registers each config with the timm model it
equals, for ``tests/test_timm_twins.py``.

- Swin: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
  https://arxiv.org/abs/2103.14030
- Swin V2: Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", https://arxiv.org/abs/2111.09883
- XCiT: El-Nouby et al., "XCiT: Cross-Covariance Image Transformers", https://arxiv.org/abs/2106.09681
- MLP-Mixer: Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", https://arxiv.org/abs/2105.01601
- ResNet: He et al., "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385
"""
import math
import re
from typing import Callable, Iterable, Mapping, Tuple, Union

import torch
from mmpretrain.models.utils import WindowMSA

from ..timm_twins import register_timm_twin

StateDict = Mapping[str, torch.Tensor]
Renames = Iterable[Tuple[str, Union[str, Callable]]]  # re.sub pattern, replacement


def _rename(state_dict: StateDict, renames: Renames) -> dict:
    """Apply regex renames in order to every key; ``head.*`` goes to the ``LinearClsHead``."""
    converted = {}
    for key, value in state_dict.items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        converted[key if key.startswith('head.fc.') else 'backbone.' + key] = value
    return converted


def unfold_merge_order(channels: int) -> torch.Tensor:
    """Index that reorders timm's 2x2 patch-merging channels into MMPretrain's.

    Both concatenate the 4 pixels of each 2x2 cell, but timm stacks them pixel-major
    (index = (2 * col + row) * C + c) while MMPretrain's ``nn.Unfold`` is channel-major
    (index = 4 * c + 2 * row + col). ``merged_mm = merged_timm[..., order]``.
    """
    c, row, col = torch.meshgrid(torch.arange(channels), torch.arange(2), torch.arange(2), indexing='ij')
    return ((2 * col + row) * channels + c).flatten()


def _window_of(table: torch.Tensor) -> int:
    """Window size of a relative-position table of (2 * W - 1) ** 2 rows."""
    return (math.isqrt(table.shape[0]) + 1) // 2


def timm_swin_to_mmeff(state_dict: StateDict) -> dict:
    """timm ``SwinTransformer`` -> ImageClassifier(SwinTransformer, GlobalAveragePooling, LinearClsHead).

    timm merges patches at the start of stage i (i >= 1), MMPretrain at the end of stage i - 1.
    """
    renames = (
        (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
        (r'^layers\.(\d+)\.downsample\.', lambda m: f'stages.{int(m[1]) - 1}.downsample.'),
        (r'^layers\.', 'stages.'),
        (r'\.attn\.', '.attn.w_msa.'),
        (r'\.mlp\.fc1\.', '.ffn.layers.0.0.'),
        (r'\.mlp\.fc2\.', '.ffn.layers.1.'),
        (r'^norm\.', 'norm3.'),
    )
    converted = _rename(state_dict, renames)
    for key, value in list(converted.items()):
        if key.endswith('.downsample.reduction.weight'):
            converted[key] = value[:, unfold_merge_order(value.shape[1] // 4)]
        elif '.downsample.norm.' in key:  # Swin v1 normalizes the 4C merged channels
            converted[key] = value[unfold_merge_order(value.shape[0] // 4)]
        elif key.endswith('relative_position_bias_table'):  # MMPretrain saves the index timm recomputes
            window = _window_of(value)
            index = WindowMSA(2, (window, window), 1).relative_position_index
            converted[key.replace('bias_table', 'index')] = index
    return converted


def timm_swinv2_to_mmeff(state_dict: StateDict) -> dict:
    """timm ``SwinTransformerV2`` -> ImageClassifier(SwinTransformerV2Strict, GlobalAveragePooling, LinearClsHead).

    Both merge patches at the start of a stage and normalize after the reduction (V2's post-norm).
    """
    renames = (
        (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
        (r'^layers\.', 'stages.'),
        (r'\.attn\.', '.attn.w_msa.'),
        (r'\.mlp\.fc1\.', '.ffn.layers.0.0.'),
        (r'\.mlp\.fc2\.', '.ffn.layers.1.'),
        (r'^norm\.', 'norm3.'),
    )
    converted = _rename(state_dict, renames)
    for key, value in converted.items():
        if key.endswith('.downsample.reduction.weight'):
            converted[key] = value[:, unfold_merge_order(value.shape[1] // 4)]
    return converted


def timm_xcit_to_mmeff(state_dict: StateDict) -> dict:
    """timm ``Xcit`` -> ImageClassifier(XCiT with the cls token out, LinearClsHead)."""
    renames = (
        (r'^patch_embed\.proj\.(\d+)\.0\.', lambda m: f'patch_embed.proj.{int(m[1]) // 2}.conv.'),
        (r'^patch_embed\.proj\.(\d+)\.1\.', lambda m: f'patch_embed.proj.{int(m[1]) // 2}.bn.'),
        (r'^pos_embed\.token_projection\.', 'pos_embed.token_projection.conv.'),
        (r'^blocks\.', 'xca_layers.'),
        (r'^cls_attn_blocks\.', 'ca_layers.'),
        (r'\.local_mp\.conv1\.', '.local_mp.conv1.conv.'),
        (r'\.local_mp\.bn\.', '.local_mp.conv1.bn.'),
        (r'\.local_mp\.conv2\.', '.local_mp.conv2.conv.'),
        (r'\.mlp\.fc1\.', '.ffn.layers.0.0.'),
        (r'\.mlp\.fc2\.', '.ffn.layers.1.'),
        (r'^head\.', 'head.fc.'),
    )
    return _rename(state_dict, renames)


def timm_mixer_to_mmeff(state_dict: StateDict) -> dict:
    """timm ``MlpMixer`` -> ImageClassifier(MlpMixer, GlobalAveragePooling(dim=1), LinearClsHead)."""
    renames = (
        (r'^stem\.proj\.', 'patch_embed.projection.'),
        (r'^blocks\.', 'layers.'),
        (r'\.norm1\.', '.ln1.'),
        (r'\.norm2\.', '.ln2.'),
        (r'\.mlp_tokens\.fc1\.', '.token_mix.layers.0.0.'),
        (r'\.mlp_tokens\.fc2\.', '.token_mix.layers.1.'),
        (r'\.mlp_channels\.fc1\.', '.channel_mix.layers.0.0.'),
        (r'\.mlp_channels\.fc2\.', '.channel_mix.layers.1.'),
        (r'^norm\.', 'ln1.'),
        (r'^head\.', 'head.fc.'),
    )
    return _rename(state_dict, renames)


def timm_resnet_to_mmeff(state_dict: StateDict) -> dict:
    """timm ``ResNet`` -> ImageClassifier(ResNet, GlobalAveragePooling, LinearClsHead): same names."""
    return _rename(state_dict, ((r'^fc\.', 'head.fc.'), ))


for size in ('tiny', 'small', 'base'):
    register_timm_twin('swin', f'hvit/swin/swin_{size}_p4_w7_in1k-224.py', f'swin_{size}_patch4_window7_224',
                       timm_swin_to_mmeff)
for size in ('tiny', 'small', 'base'):
    # timm has V2 at window 8 / 256 px only; the same model with the V1 window at 224 px is the twin (its
    # input size is set through the pretrained config, since the `img_size` argument here is the test's)
    register_timm_twin('swinv2', f'hvit/swinv2/swinv2_{size}_w7_in1k-224.py', f'swinv2_{size}_window8_256',
                       timm_swinv2_to_mmeff, window_size=7, pretrained_cfg_overlay=dict(input_size=(3, 224, 224)))
for size in ('nano_12', 'tiny_12', 'tiny_24', 'small_12', 'small_24', 'medium_24'):
    register_timm_twin('xcit', f'hvit/xcit/xcit_{size}_p16_in1k-224.py', f'xcit_{size}_p16_224', timm_xcit_to_mmeff)
for size in ('s16', 's32', 'b16', 'b32'):
    register_timm_twin('mixer', f'hvit/mixer/mixer_{size}_in1k-224.py', f'mixer_{size}_224', timm_mixer_to_mmeff)
for depth in (18, 34, 50, 101):
    register_timm_twin('resnet', f'hvit/resnet/resnet{depth}_in1k-224.py', f'resnet{depth}', timm_resnet_to_mmeff)
register_timm_twin('resnet', 'hvit/resnet/wide_resnet50_2_in1k-224.py', 'wide_resnet50_2', timm_resnet_to_mmeff)
