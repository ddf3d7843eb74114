# HiViT-S/16 on ImageNet-1k at 224 px: MLP blocks replace attention in the two high-resolution stages
# (MMPretrain's HiViT layers in mmeff's multi-scale HiViTPyramid). The official classifier averages the
# tokens and normalizes them (`fc_norm`) before the linear head, hence 'avg_featmap' and no neck.
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(
        type='HiViTPyramid', arch='small', img_size=224, ape=True, rpe=True, drop_path_rate=0.3,
        out_type='avg_featmap'),
    neck=None,
    head=dict(in_channels=384))
