# CvT-21 on ImageNet-1k at 224 px (hybrid attention: conv token embedding, conv q/k/v projection).
# The classifier reads the LayerNorm-ed class token of the last stage, as in the paper.
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(
    backbone=dict(type='CvT', arch='21', out_type='cls_token', drop_path_rate=0.1),
    neck=None,
    head=dict(in_channels=384))
