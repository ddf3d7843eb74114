# The efficient-ViT backbones in a stock MMDetection detector (_base_/retinanet_adamw_1x_coco.py: mmdet's
# RetinaNet-R50-FPN 1x on COCO with AdamW). Here MMPretrain's Swin-T (windowed attention) replaces ResNet-50: its
# stages 2-4 (192/384/768 channels, strides 8/16/32) go into the FPN, which adds strides 64/128 by strided convs on
# the last map (as mmdet's own swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py).
_base_ = './_base_/retinanet_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='LeanSwinTransformer', arch='tiny', out_indices=(1, 2, 3), drop_path_rate=0.2,
        # pad maps smaller than a 7x7 window (as Swin's detection code) instead of failing on small inputs
        pad_small_map=True,
        # ImageNet weights: init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

