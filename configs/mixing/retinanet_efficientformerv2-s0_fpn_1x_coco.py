# The efficient-ViT backbones in a stock MMDetection detector (_base_/retinanet_adamw_1x_coco.py: mmdet's
# RetinaNet-R50-FPN 1x on COCO with AdamW). Here the hybrid EfficientFormerV2-S0 replaces ResNet-50: its stages 2-4
# (48/96/176 channels, strides 8/16/32) go into the FPN, which adds strides 64/128 by strided convs on the last map.
_base_ = './_base_/retinanet_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='EfficientFormerV2', arch='s0', out_indices=(1, 2, 3),
        # ImageNet weights: init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    neck=dict(in_channels=[48, 96, 176], start_level=0, num_outs=5))

