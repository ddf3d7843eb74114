# retinanet_efficientformerv2-s0_fpn_1x_coco.py on the bundled demo shapes (_base_/retinanet_demo-256.py), from scratch:
#   python tools/train.py configs/mixing/retinanet_efficientformerv2-s0_fpn_demo-256.py
_base_ = './_base_/retinanet_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='EfficientFormerV2', arch='s0', out_indices=(1, 2, 3)),
    neck=dict(in_channels=[48, 96, 176], start_level=0, num_outs=5))
