"""Official RT-DETR checkpoints (lyuwenyu/RT-DETR, v1 ``rtdetr_*`` and v2 ``rtdetrv2_*``) as
mmeff :class:`~mmeff.models.detectors.rtdetr.RTDETR` state dicts.

RT-DETR, Zhao et al., CVPR 2024, https://arxiv.org/abs/2304.08069; RT-DETRv2, Lv et al., 2024,
https://arxiv.org/abs/2407.17140.

An official checkpoint has three parts: ``backbone.*`` (PResNet or HGNetv2), ``encoder.*`` (the
hybrid encoder, mmeff's neck) and ``decoder.*`` (input projections, decoder, query selection,
prediction heads, denoising embedding). mmeff's backbone and encoder mirror the official module
names but for a few renames (:data:`BACKBONE_RULES`, :data:`ENCODER_RULES`); the decoder part
spreads over the detector, its decoder and its head (:func:`decoder_rules`). Every key is either
mapped or dropped for a stated reason; anything else stops the conversion
(:class:`UnmappedKeysError`).

Dropped: ``decoder.anchors`` / ``decoder.valid_mask`` (recomputed for each input size),
v2's ``cross_attn.num_points_scale`` (a constant ``1 / num_points``: with the same number of points
on every level, v2's sampling ``offset * num_points_scale * box_size * 0.5`` is v1's
``offset / num_points * box_size * 0.5``, which mmeff computes) and the padding row of
``denoising_class_embed`` (index ``num_classes``; mmdet's denoising generator has no padding row).
v2 models trained with ``cross_attn_method='discrete'`` sample without interpolation; that is a
config option, not in the weights, and mmeff always samples bilinearly.
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .rename import Rule, lookup, rename

# Keys that the model recomputes: the anchors of the training size and their validity.
RECOMPUTED_KEYS = ('decoder.anchors', 'decoder.valid_mask')


class UnmappedKeysError(KeyError):
    """Official keys that have no mmeff counterpart; ``keys`` lists them."""

    def __init__(self, keys: List[str]) -> None:
        self.keys = sorted(keys)
        super().__init__(f'{len(self.keys)} key(s) of the official checkpoint have no mmeff '
                         f'counterpart: {self.keys}. Is this an RT-DETR (v1/v2) checkpoint of '
                         f'lyuwenyu/RT-DETR? If the model has extra modules, remove their keys '
                         f'or extend mmeff.converters.rtdetr_official.')


def extract_state_dict(checkpoint: Mapping) -> Dict[str, Tensor]:
    """The weights of an official checkpoint: the EMA weights if present (what the official
    evaluation uses), else ``['model']``, else the mapping itself (a bare state dict)."""
    if 'ema' in checkpoint and isinstance(checkpoint['ema'], Mapping):
        return dict(checkpoint['ema']['module'])
    if 'model' in checkpoint and isinstance(checkpoint['model'], Mapping):
        return dict(checkpoint['model'])
    if not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(f"Not an official RT-DETR checkpoint: no 'ema' or 'model' entry and not a "
                         f'bare state dict (top-level keys: {sorted(checkpoint)[:10]}).')
    return dict(checkpoint)


def detect_version(state_dict: Mapping[str, Tensor]) -> str:
    """'v2' if the checkpoint has v2's deformable-attention point scales or its named
    ``enc_output.proj``, else 'v1'."""
    v2_markers = ('.cross_attn.num_points_scale', 'decoder.enc_output.proj.')
    return 'v2' if any(m in key for key in state_dict for m in v2_markers) else 'v1'


# Official backbone keys (without ``backbone.``) -> mmeff's, by backbone type. PResNet: mmcv's
# ``ConvModule`` names its norm ``bn``; HGNetv2: the official 2x2 stem convs wrap their conv in a
# padding ``Sequential`` (``stem2a.conv.1``), mmeff pads in ``forward``.
BACKBONE_RULES: Dict[str, Sequence[Rule]] = {
    'PResNet': ((r'\.norm\.', '.bn.'), ),
    'HGNetv2': ((r'\.conv\.1\.', '.conv.'), ),
}
# Official encoder keys (without ``encoder.``) -> mmeff's ``HybridEncoder``: v1 checkpoints name the
# projection ``input_proj.{i}.0/1``, v2 ``input_proj.{i}.conv/norm``; the AIFI layers are
# ``encoder.{level}.layers.{j}``; mmcv's ``ConvModule`` says ``bn`` for ``norm``.
ENCODER_RULES: Sequence[Rule] = (
    (r'^input_proj\.(\d+)\.0\.', r'input_proj.\1.conv.'),
    (r'^input_proj\.(\d+)\.1\.', r'input_proj.\1.norm.'),
    (r'^encoder\.(\d+)\.layers\.(\d+)\.', r'aifi.layers.\1.\2.'),
    (r'^(lateral_convs|fpn_blocks|downsample_convs|pan_blocks)\.', r'ccff.\1.'),
    (r'\.norm\.', '.bn.'),
)


def backbone_rules(state_dict: Mapping[str, Tensor]) -> Sequence[Rule]:
    """The :data:`BACKBONE_RULES` of the checkpoint's backbone: HGNetv2 (L/X/H) has a
    ``stem.stem1``, PResNet a three-conv ``conv1``."""
    if any(key.startswith('backbone.stem.stem1.') for key in state_dict):
        return BACKBONE_RULES['HGNetv2']
    return BACKBONE_RULES['PResNet']


def num_decoder_layers(state_dict: Mapping[str, Tensor]) -> int:
    """Decoder layers = number of per-layer score heads (``decoder.dec_score_head.{n}``)."""
    layers = {m.group(1) for key in state_dict
              for m in [re.match(r'decoder\.dec_score_head\.(\d+)\.', key)] if m}
    if not layers:
        raise UnmappedKeysError([k for k in state_dict if k.startswith('decoder.')] or
                                ['decoder.dec_score_head.* (none found)'])
    return len(layers)


def decoder_rules(num_layers: int) -> Sequence[Rule]:
    """Official decoder keys (without ``decoder.``) -> the mmeff detector's names (for
    :func:`~mmeff.converters.rename.lookup`: a key no rule matches has no counterpart).

    The head's branch ``num_layers`` scores the encoder tokens; its box MLPs are mmdet
    ``Sequential(Linear, ReLU, ...)``, so official MLP layer ``k`` is index ``2k``.
    """
    return [
        (r'input_proj\.(\d+)\.conv\.(.+)', r'input_proj.\1.conv.\2'),
        (r'input_proj\.(\d+)\.norm\.(.+)', r'input_proj.\1.bn.\2'),
        (r'decoder\.layers\.(\d+)\.(.+)', r'decoder.layers.\1.\2'),
        (r'query_pos_head\.layers\.(\d+)\.(weight|bias)', r'decoder.query_pos_head.layers.\1.\2'),
        (r'enc_output\.(?:0|proj)\.(weight|bias)', r'enc_output.0.\1'),  # v1: 0/1, v2: proj/norm
        (r'enc_output\.(?:1|norm)\.(weight|bias)', r'enc_output.1.\1'),
        (r'enc_score_head\.(weight|bias)', rf'bbox_head.cls_branches.{num_layers}.\1'),
        (r'enc_bbox_head\.layers\.(\d+)\.(weight|bias)',
         lambda m: f'bbox_head.reg_branches.{num_layers}.{2 * int(m[1])}.{m[2]}'),
        (r'dec_score_head\.(\d+)\.(weight|bias)', r'bbox_head.cls_branches.\1.\2'),
        (r'dec_bbox_head\.(\d+)\.layers\.(\d+)\.(weight|bias)',
         lambda m: f'bbox_head.reg_branches.{m[1]}.{2 * int(m[2])}.{m[3]}'),
        (r'denoising_class_embed\.weight', 'dn_query_generator.label_embedding.weight'),
    ]


def official_key_to_mmeff(key: str, backbone: Sequence[Rule],
                          decoder: Sequence[Rule]) -> Optional[str]:
    """Map one official key to the mmeff detector's state-dict name (None: no counterpart), with the
    checkpoint's :func:`backbone_rules` and :func:`decoder_rules`."""
    part, _, rest = key.partition('.')
    if part == 'backbone':
        return 'backbone.' + rename(rest, backbone)
    if part == 'encoder':
        return 'neck.' + rename(rest, ENCODER_RULES)
    if part == 'decoder':
        return lookup(rest, decoder)
    return None


def _check_num_points_scale(key: str, scale: Tensor, num_levels: int) -> None:
    """Refuse v2 checkpoints whose levels have different point counts (see the module doc)."""
    num_points = scale.numel() // num_levels
    expected = torch.full_like(scale, 1.0 / num_points)
    if scale.numel() % num_levels or not torch.allclose(scale.float(), expected.float()):
        raise ValueError(
            f'{key} is {scale.tolist()}, not {num_points} points of scale 1/{num_points} on each of '
            f'{num_levels} levels: the checkpoint samples a different number of points per level, '
            f"which mmeff's RTDETRMSDeformableAttention (one num_points for all levels) does not "
            f'support.')


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> Tuple['OrderedDict[str, Tensor]',
                                                                  List[str]]:
    """Convert an official state dict to mmeff names.

    Returns:
        tuple: the converted state dict and the sorted official keys dropped on purpose.

    Raises:
        UnmappedKeysError: some keys have no mmeff counterpart (all of them are listed).
        ValueError: a v2 checkpoint with per-level point counts.
    """
    backbone, decoder = backbone_rules(state_dict), decoder_rules(num_decoder_layers(state_dict))
    num_levels = len({m.group(1) for key in state_dict
                      for m in [re.match(r'decoder\.input_proj\.(\d+)\.', key)] if m})
    converted, dropped, unmapped = OrderedDict(), [], []
    for key, value in state_dict.items():
        if key in RECOMPUTED_KEYS:
            dropped.append(key)
            continue
        if key.endswith('.cross_attn.num_points_scale'):
            _check_num_points_scale(key, value, num_levels)
            dropped.append(key)
            continue
        new_key = official_key_to_mmeff(key, backbone, decoder)
        if new_key is None:
            unmapped.append(key)
            continue
        if new_key == 'dn_query_generator.label_embedding.weight':
            value = value[:-1]  # drop the padding row (index num_classes)
        converted[new_key] = value
    if unmapped:
        raise UnmappedKeysError(unmapped)
    return converted, sorted(dropped)


def compare_with_model(state_dict: Mapping[str, Tensor],
                       model_state: Mapping[str, Tensor]) -> Dict[str, List]:
    """Differences between a converted state dict and a model's: ``missing`` (model keys not in
    the checkpoint), ``unexpected`` (the reverse) and ``shape_mismatch`` (key, ckpt, model)."""
    return dict(
        missing=sorted(set(model_state) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(model_state)),
        shape_mismatch=[(k, tuple(state_dict[k].shape), tuple(model_state[k].shape))
                        for k in sorted(set(state_dict) & set(model_state))
                        if state_dict[k].shape != model_state[k].shape])


def convert_checkpoint(src: str) -> Dict:
    """Load an official checkpoint (``weights_only=True``) and return the mmeff checkpoint
    ``{'state_dict': ..., 'meta': ...}`` to save for mmengine's ``load_from``.

    ``meta`` holds only strings and lists of strings, so the result loads with
    ``weights_only=True`` too.
    """
    checkpoint = torch.load(src, map_location='cpu', weights_only=True)
    state_dict = extract_state_dict(checkpoint)
    converted, dropped = convert_state_dict(state_dict)
    meta = dict(source=osp.basename(src), official_version=detect_version(state_dict),
                dropped_official_keys=dropped)
    return dict(state_dict=converted, meta=meta)
