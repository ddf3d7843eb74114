"""timm classifiers' state dicts -> mmeff ``ImageClassifier`` state dicts (backbone + ``LinearClsHead``).

Each converter maps one timm architecture onto the mmeff (or MMPretrain) model of the same architecture:
renames (:mod:`.rename`), plus the few layout differences written next to their converter. The twins they
serve (which config equals which timm model) are listed in :mod:`.twins`.

Swin, Swin V2, XCiT, MLP-Mixer and ResNet are MMPretrain 1.2's models, which "Which Transformer to Favor"
(arXiv 2308.09372) uses as they are: the configs build ``SwinTransformer``, ``MlpMixer`` and ``XCiT`` (as
``LeanSwinTransformer``, ``LeanMlpMixer`` and ``LeanXCiT``: the same models without per-call overheads,
see ``models/backbones/mmpretrain_lean.py``), ``SwinTransformerV2`` (as ``SwinTransformerV2Strict``, see
``swin_v2.py``) and ``ResNet``; besides renames, the one difference is the channel order of Swin's 2x2
patch merging.
"""
import math
from typing import Dict, Sequence

import torch
from mmpretrain.models.utils import WindowMSA
from torch import Tensor

from mmeff.models.backbones.mmpretrain_lean import unfold_merge_order

from .rename import Reshape, Rule, StateDict, to_classifier

_HEAD_FC = (r'^head\.', 'head.fc.')  # timm's bare ``head`` Linear is the LinearClsHead's ``fc``
_PATCH_EMBED = (r'^patch_embed\.proj\.', 'patch_embed.projection.')
_LS_GAMMA = (r'\.(ls[12])\.gamma', r'.\1.weight')  # timm's LayerScale ``gamma`` [C], mmeff's ``weight``
# LayerScale of the conv-shaped models: ``gamma`` [C, 1, 1] -> ``weight`` [C]
_CONV_GAMMA = (r'\.gamma$', '.weight')
_CONV_GAMMA_RESHAPE = (r'\.gamma$', torch.flatten)
_MMPRETRAIN_FFN = ((r'\.mlp\.fc1\.', '.ffn.layers.0.0.'), (r'\.mlp\.fc2\.', '.ffn.layers.1.'))


def timm_vit_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``VisionTransformer`` (``no_embed_class=True``, e.g. DeiT III) -> ImageClassifier(ViTWithMixer,
    LinearClsHead)."""
    return to_classifier(state_dict, (_HEAD_FC, _PATCH_EMBED, (r'\.attn\.', '.mixer.'), _LS_GAMMA))


def timm_cait_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``Cait`` -> ImageClassifier(CaiT, LinearClsHead)."""
    rules = (_HEAD_FC, _PATCH_EMBED, (r'blocks_token_only\.', 'class_blocks.'), (r'cls_token', 'class_token'),
             (r'\.attn\.', '.mixer.'), (r'\.gamma_([12])', r'.ls\1.weight'))
    return to_classifier(state_dict, rules)


def timm_coat_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``CoaT`` -> ImageClassifier(CoaT with ``out_type='cls_token'``, LinearClsHead): timm numbers its
    per-scale modules in their names (``patch_embed1``, ``norm12``), mmeff indexes lists."""
    parallel = 'aggregate.weight' in state_dict
    rules = (
        _HEAD_FC,
        (r'^patch_embed(\d)\.proj\.', lambda m: f'patch_embeds.{int(m[1]) - 1}.projection.'),
        (r'^patch_embed(\d)\.norm\.', lambda m: f'patch_embeds.{int(m[1]) - 1}.norm.'),
        (r'^cls_token(\d)$', lambda m: f'cls_tokens.{int(m[1]) - 1}'),
        (r'^(cpe|crpe)(\d)\.', lambda m: f'{m[1]}s.{int(m[2]) - 1}.'),
        (r'^serial_blocks(\d)\.', lambda m: f'serial_blocks.{int(m[1]) - 1}.'),
        (r'\.norm1(\d)\.', lambda m: f'.norms1.{int(m[1]) - 2}.'),
        (r'\.norm2(\d)\.', lambda m: f'.norms2.{int(m[1]) - 2}.'),
        (r'\.factoratt_crpe(\d)\.', lambda m: f'.attns.{int(m[1]) - 2}.'),
        (r'\.mlp\d\.', '.mlp.'),  # one MLP shared by the scales
        (r'^norm(\d)\.', lambda m: f'norms.{int(m[1]) - 2 if parallel else 0}.'),
    )
    return to_classifier(state_dict, rules)


def timm_focalnet_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``FocalNet`` -> ImageClassifier(FocalNet, LinearClsHead): timm's 1x1 convs are mmeff's linear
    layers (their weights lose the trailing 1x1)."""
    conv1x1 = r'\.(modulation\.(f|h|proj)|mlp\.fc[12])\.weight$'
    return to_classifier(state_dict, reshapes=((conv1x1, lambda weight: weight.flatten(1)), ))


def timm_efficientvit_mit_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``EfficientVit``/``EfficientVitLarge`` -> ImageClassifier(EfficientViTMIT, EfficientViTClsHead):
    every norm is the BN of a conv-norm-act (mmcv's ``bn``), and the head's ``Sequential`` is named."""
    rules = ((r'\.norm\.', '.bn.'), (r'^head\.classifier\.0\.', 'head.hidden.'),
             (r'^head\.classifier\.1\.', 'head.norm.'), (r'^head\.classifier\.4\.', 'head.fc.'))
    return to_classifier(state_dict, rules)


def _with_distilled_head(state_dict: StateDict, rules: Sequence[Rule],
                         reshapes: Sequence[Reshape] = ()) -> Dict[str, Tensor]:
    """``to_classifier`` of the backbone, and one ``head.fc`` for timm's ``head`` + ``head_dist``.

    timm's distilled models (DeiT-style, with a distillation head) predict ``(head(x) + head_dist(x)) / 2``
    at inference: one linear map, so the two heads average into one.
    """
    head = {}
    for name in ('weight', 'bias'):
        value = state_dict['head.' + name]
        if 'head_dist.' + name in state_dict:
            value = (value + state_dict['head_dist.' + name]) / 2
        head['head.fc.' + name] = value
    backbone = {key: value for key, value in state_dict.items() if not key.startswith(('head.', 'head_dist.'))}
    return {**head, **to_classifier(backbone, rules, reshapes)}


def timm_efficientformerv2_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``EfficientFormerV2`` -> ImageClassifier(EfficientFormerV2, LinearClsHead); the distillation
    head (timm's default, and its published weights) is folded into the head."""
    return _with_distilled_head(state_dict, (_LS_GAMMA, ))


def timm_swiftformer_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``SwiftFormer`` -> ImageClassifier(SwiftFormer, LinearClsHead): conv-BN pairs into
    ``ConvModule`` names, LayerScale to ``weight`` [C]; the distillation head is folded into the head."""
    rules = ((r'^stem\.0\.', 'stem.0.conv.'), (r'^stem\.1\.', 'stem.0.bn.'), (r'^stem\.3\.', 'stem.1.conv.'),
             (r'^stem\.4\.', 'stem.1.bn.'), (r'\.downsample\.proj\.', '.downsample.conv.'),
             (r'\.downsample\.norm\.', '.downsample.bn.'), _CONV_GAMMA)
    return _with_distilled_head(state_dict, rules, (_CONV_GAMMA_RESHAPE, ))


def timm_fastvit_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``FastVit`` (train-time form) -> ImageClassifier(FastViT, LinearClsHead): LayerScale to
    ``weight`` [C], squeeze-excitation ``fc1/fc2`` -> ``conv1.conv/conv2.conv``."""
    rules = (_CONV_GAMMA, (r'\.se\.fc([12])\.', r'.se.conv\1.conv.'))
    return to_classifier(state_dict, rules, (_CONV_GAMMA_RESHAPE, ))


def timm_nextvit_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``NextViT`` -> ImageClassifier(NextViT, LinearClsHead): the stem's norms are mmcv's ``bn``."""
    return to_classifier(state_dict, ((r'^(stem\.\d+)\.norm\.', r'\1.bn.'), ))


def _merged_reduction(weight: Tensor) -> Tensor:
    """A 2x2 patch merging's reduction weight [C', 4C] from timm's input channel order to MMPretrain's."""
    return weight[:, unfold_merge_order(weight.shape[1] // 4)]


def timm_swin_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``SwinTransformer`` -> ImageClassifier(SwinTransformer, GlobalAveragePooling, LinearClsHead).

    timm merges patches at the start of stage i (i >= 1), MMPretrain at the end of stage i - 1; MMPretrain
    saves the relative-position index that timm recomputes.
    """
    rules = (_PATCH_EMBED, (r'^layers\.(\d+)\.downsample\.', lambda m: f'stages.{int(m[1]) - 1}.downsample.'),
             (r'^layers\.', 'stages.'), (r'\.attn\.', '.attn.w_msa.'), *_MMPRETRAIN_FFN, (r'^norm\.', 'norm3.'))
    reshapes = ((r'\.downsample\.reduction\.weight$', _merged_reduction),
                # Swin v1 normalizes the 4C merged channels
                (r'\.downsample\.norm\.', lambda value: value[unfold_merge_order(value.shape[0] // 4)]))
    converted = to_classifier(state_dict, rules, reshapes)
    for key, table in list(converted.items()):
        if key.endswith('relative_position_bias_table'):
            window = (math.isqrt(table.shape[0]) + 1) // 2  # the table has (2 * window - 1) ** 2 rows
            converted[key.replace('bias_table', 'index')] = WindowMSA(2, (window, window), 1).relative_position_index
    return converted


def timm_swinv2_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``SwinTransformerV2`` -> ImageClassifier(SwinTransformerV2Strict, GlobalAveragePooling,
    LinearClsHead).

    Both merge patches at the start of a stage and normalize after the reduction (V2's post-norm).
    """
    rules = (_PATCH_EMBED, (r'^layers\.', 'stages.'), (r'\.attn\.', '.attn.w_msa.'), *_MMPRETRAIN_FFN,
             (r'^norm\.', 'norm3.'))
    return to_classifier(state_dict, rules, ((r'\.downsample\.reduction\.weight$', _merged_reduction), ))


def timm_xcit_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``Xcit`` -> ImageClassifier(XCiT with the cls token out, LinearClsHead)."""
    rules = (
        # timm's patch embedding is Sequential(conv, bn, act, conv, bn, ...), mmeff's a list of ConvModules
        (r'^patch_embed\.proj\.(\d+)\.([01])\.',
         lambda m: f'patch_embed.proj.{int(m[1]) // 2}.{("conv", "bn")[int(m[2])]}.'),
        (r'^pos_embed\.token_projection\.', 'pos_embed.token_projection.conv.'),
        (r'^blocks\.', 'xca_layers.'),
        (r'^cls_attn_blocks\.', 'ca_layers.'),
        (r'\.local_mp\.(conv[12])\.', r'.local_mp.\1.conv.'),
        (r'\.local_mp\.bn\.', '.local_mp.conv1.bn.'),
        *_MMPRETRAIN_FFN,
        _HEAD_FC,
    )
    return to_classifier(state_dict, rules)


def timm_mixer_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``MlpMixer`` -> ImageClassifier(MlpMixer, GlobalAveragePooling(dim=1), LinearClsHead)."""
    rules = (
        (r'^stem\.proj\.', 'patch_embed.projection.'),
        (r'^blocks\.', 'layers.'),
        (r'\.norm([12])\.', r'.ln\1.'),
        (r'\.mlp_(token|channel)s\.fc1\.', r'.\1_mix.layers.0.0.'),  # mmcv FFNs
        (r'\.mlp_(token|channel)s\.fc2\.', r'.\1_mix.layers.1.'),
        (r'^norm\.', 'ln1.'),
        _HEAD_FC,
    )
    return to_classifier(state_dict, rules)


def timm_resnet_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """timm ``ResNet`` -> ImageClassifier(ResNet, GlobalAveragePooling, LinearClsHead): the same names."""
    return to_classifier(state_dict, ((r'^fc\.', 'head.fc.'), ))
