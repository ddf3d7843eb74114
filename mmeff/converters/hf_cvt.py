"""HF transformers' ``CvtForImageClassification`` weights -> an mmeff CvT classifier
(``backbone=dict(type='CvT', out_type='cls_token')``, ``LinearClsHead``): renames only, no tensor changes.

HF's CvT is the reference mmeff's CvT is compared with (``tests/test_hvit_cvt.py``); timm has no CvT.
"""
from typing import Dict

from torch import Tensor

from .rename import StateDict, to_classifier

_HF_TO_MMEFF = (
    (r'^cvt\.encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.(projection|normalization)\.',
     lambda m: f'stages.{m[1]}.embed.{"conv" if m[2] == "projection" else "norm"}.'),
    (r'^cvt\.encoder\.stages\.(\d+)\.cls_token$', r'stages.\1.cls_token'),
    (r'^cvt\.encoder\.stages\.(\d+)\.layers\.', r'stages.\1.blocks.'),
    # query/key/value -> q/k/v: their depth-wise conv + BN, then their linear projection
    (r'\.attention\.attention\.convolution_projection_(query|key|value)\.convolution_projection\.'
     r'(convolution|normalization)\.',
     lambda m: f'.mixer.conv_{m[1][0]}.{"conv" if m[2] == "convolution" else "bn"}.'),
    (r'\.attention\.attention\.projection_(query|key|value)\.', lambda m: f'.mixer.{m[1][0]}.'),
    (r'\.attention\.output\.dense\.', '.mixer.proj.'),
    (r'\.intermediate\.dense\.', '.mlp.fc1.'),
    (r'\.output\.dense\.', '.mlp.fc2.'),
    (r'\.layernorm_before\.', '.norm1.'),
    (r'\.layernorm_after\.', '.norm2.'),
    (r'^layernorm\.', 'norm.'),
    (r'^classifier\.', 'head.fc.'),
)


def hf_cvt_to_mmeff(state_dict: StateDict) -> Dict[str, Tensor]:
    """HF ``CvtForImageClassification`` state dict -> the mmeff CvT ``ImageClassifier``'s."""
    return to_classifier(state_dict, _HF_TO_MMEFF)
