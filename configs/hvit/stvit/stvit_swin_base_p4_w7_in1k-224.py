# STViT-R on Swin-B (patch 4, window 7) on ImageNet-1k at 224 px: the third stage computes on 3x3 semantic
# tokens per window (summary tokens) and recovers the image tokens at the end of every 6-block cycle. Drop-path 0.4 as
# the authors' STViT-R-Swin-B.
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(type='STViTSwin', arch='base', img_size=224, patch_size=4, window_size=7, drop_path_rate=0.4),
    head=dict(in_channels=1024))
