# Swin V2-S (patch 4, window 7) on ImageNet-1k at 224 px (sparse attention): MMPretrain's SwinTransformerV2
# (scaled cosine attention, log-spaced continuous position bias, post-norm) with the V1 window at 224 px;
# the Strict subclass only makes its checkpoints load strictly (mmeff/models/backbones/swin_v2.py).
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(
        type='SwinTransformerV2Strict', arch='small', img_size=224, patch_size=4, window_size=7, drop_path_rate=0.3),
    head=dict(in_channels=768))
