"""HF transformers' ``RTDetrForObjectDetection`` (ResNet-vd backbones) weights -> mmeff RT-DETR.

HF's RT-DETR is the reference implementation mmeff is compared with (parity test, speed script).
Its names are first mapped to the official checkpoint's (lyuwenyu/RT-DETR v1), then the official
converter (:mod:`.rtdetr_official`) does the rest, so both paths share one mapping to mmeff.
Only the state dicts are handled here: importing this module does not import transformers.
"""
import re
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from .rename import lookup, rename
from .rtdetr_official import UnmappedKeysError, convert_state_dict

# (HF pattern, official replacement) for :func:`~.rename.lookup`: the first full match names it.
_HF_TO_OFFICIAL = [
    # PResNet stem and stages; HF's layer.{0,1,2} are the official branch2a/b/c.
    (r'model\.backbone\.model\.embedder\.embedder\.(\d)\.convolution\.(.+)',
     lambda m: f'backbone.conv1.conv1_{int(m[1]) + 1}.conv.{m[2]}'),
    (r'model\.backbone\.model\.embedder\.embedder\.(\d)\.normalization\.(.+)',
     lambda m: f'backbone.conv1.conv1_{int(m[1]) + 1}.norm.{m[2]}'),
    (r'model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.'
     r'(convolution|normalization)\.(.+)',
     lambda m: (f'backbone.res_layers.{m[1]}.blocks.{m[2]}.branch2{"abc"[int(m[3])]}.'
                f'{"conv" if m[4] == "convolution" else "norm"}.{m[5]}')),
    # Strided shortcut: HF Sequential(pool, conv-norm) = official Sequential(pool, conv=conv-norm).
    (r'model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(1\.)?'
     r'(convolution|normalization)\.(.+)',
     lambda m: (f'backbone.res_layers.{m[1]}.blocks.{m[2]}.short.{"conv." if m[3] else ""}'
                f'{"conv" if m[4] == "convolution" else "norm"}.{m[5]}')),
    # Hybrid encoder.
    (r'model\.encoder_input_proj\.(.+)', r'encoder.input_proj.\1'),
    (r'model\.encoder\.encoder\.(\d+)\.layers\.(\d+)\.(.+)', r'encoder.encoder.\1.layers.\2.\3'),
    (r'model\.encoder\.((?:lateral_convs|downsample_convs|fpn_blocks|pan_blocks)\..+)',
     r'encoder.\1'),
    # Decoder and heads.
    (r'model\.decoder_input_proj\.(\d+)\.0\.(.+)', r'decoder.input_proj.\1.conv.\2'),
    (r'model\.decoder_input_proj\.(\d+)\.1\.(.+)', r'decoder.input_proj.\1.norm.\2'),
    (r'model\.decoder\.layers\.(.+)', r'decoder.decoder.layers.\1'),
    (r'model\.decoder\.query_pos_head\.(.+)', r'decoder.query_pos_head.\1'),
    (r'model\.decoder\.class_embed\.(.+)', r'decoder.dec_score_head.\1'),
    (r'model\.decoder\.bbox_embed\.(.+)', r'decoder.dec_bbox_head.\1'),
    (r'model\.((?:denoising_class_embed|enc_output|enc_score_head|enc_bbox_head|anchors|'
     r'valid_mask)(?:\..+)?)', r'decoder.\1'),
]
# HF layer names -> official ones, inside the encoder and decoder layers.
_LAYER_RENAMES = ((r'\.self_attn_layer_norm\.', '.norm1.'),
                  (r'\.encoder_attn_layer_norm\.', '.norm2.'),
                  (r'\.encoder_attn\.', '.cross_attn.'), (r'\.fc1\.', '.linear1.'),
                  (r'\.fc2\.', '.linear2.'))
# Top-level class_embed / bbox_embed are the same tensors as model.decoder.class_embed / bbox_embed.
_TIED_COPIES = r'(class_embed|bbox_embed)\..+'


def hf_key_to_official(key: str) -> Optional[str]:
    """Map one HF key to the official name (q/k/v projections keep their HF suffix, see
    :func:`hf_state_dict_to_official`); None if it has no counterpart."""
    key = lookup(key, _HF_TO_OFFICIAL)
    if key is not None and '.layers.' in key and key.startswith(('encoder.encoder.',
                                                                  'decoder.decoder.')):
        # The encoder layer's last norm is norm2, the decoder layer's norm3.
        last_norm = '.norm2.' if key.startswith('encoder.') else '.norm3.'
        key = rename(key, _LAYER_RENAMES + ((r'\.final_layer_norm\.', last_norm), ))
    return key


def hf_state_dict_to_official(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """HF state dict -> official names; HF's separate q/k/v projections become
    ``nn.MultiheadAttention``'s packed ``in_proj_weight`` / ``in_proj_bias`` (order q, k, v)."""
    official, qkv, unmapped = {}, {}, []
    for key, value in state_dict.items():
        if re.fullmatch(_TIED_COPIES, key):
            continue
        new_key = hf_key_to_official(key)
        if new_key is None:
            unmapped.append(key)
            continue
        match = re.fullmatch(r'(.+\.self_attn)\.([qkv])_proj\.(weight|bias)', new_key)
        if match:
            qkv.setdefault((match[1], match[3]), {})[match[2]] = value
        else:
            official[new_key] = value
    if unmapped:
        raise UnmappedKeysError(unmapped)
    for (prefix, kind), parts in qkv.items():
        official[f'{prefix}.in_proj_{kind}'] = torch.cat([parts['q'], parts['k'], parts['v']])
    return official


def hf_to_mmeff_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """HF ``RTDetrForObjectDetection`` state dict -> mmeff ``RTDETR`` state dict."""
    return convert_state_dict(hf_state_dict_to_official(state_dict))[0]


def hf_rtdetr_config(depth: int, num_classes: int = 80):
    """The HF ``RTDetrConfig`` of the official RT-DETR-R18/R34/R50/R101 sizes (ResNet-vd
    backbone, built from scratch: no hub access, no timm), as mmeff's RT-DETR-R* configs have them.

    HF's ``RTDetrResNet`` is PResNet: a 3-conv 32-32-64 stem, the stride on the 3x3 conv
    (``downsample_in_bottleneck=False``) and avg-pool shortcuts; its norms are frozen as the
    official ones (R50/R101 frozen, R18/R34 trained).
    """
    from transformers import RTDetrConfig, RTDetrResNetConfig
    sizes = {18: ('basic', [2, 2, 2, 2], 1), 34: ('basic', [3, 4, 6, 3], 1),
             50: ('bottleneck', [3, 4, 6, 3], 4), 101: ('bottleneck', [3, 4, 23, 3], 4)}
    layer_type, depths, expansion = sizes[depth]
    hidden_sizes = [c * expansion for c in (64, 128, 256, 512)]
    backbone = RTDetrResNetConfig(layer_type=layer_type, depths=depths, hidden_sizes=hidden_sizes,
                                  embedding_size=64, downsample_in_bottleneck=False,
                                  out_features=['stage2', 'stage3', 'stage4'])
    small = depth < 50
    return RTDetrConfig(
        backbone_config=backbone, use_pretrained_backbone=False, use_timm_backbone=False,
        freeze_backbone_batch_norms=not small, num_labels=num_classes,
        encoder_in_channels=hidden_sizes[1:], hidden_expansion=0.5 if small else 1.0,
        encoder_hidden_dim=384 if depth == 101 else 256,
        encoder_ffn_dim=2048 if depth == 101 else 1024,
        decoder_in_channels=[384 if depth == 101 else 256] * 3,
        decoder_layers={18: 3, 34: 4}.get(depth, 6))
