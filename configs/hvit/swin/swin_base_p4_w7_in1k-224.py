# Swin-B (patch 4, window 7) on ImageNet-1k at 224 px: MMPretrain's SwinTransformer (sparse attention), as
# LeanSwinTransformer.
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(type='LeanSwinTransformer', arch='base', img_size=224, patch_size=4, window_size=7,
                  drop_path_rate=0.5),
    head=dict(in_channels=1024))
