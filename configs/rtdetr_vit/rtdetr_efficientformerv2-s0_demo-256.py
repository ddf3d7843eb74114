# RT-DETR with EfficientFormerV2-S0 (configs/rtdetr_vit/rtdetr_efficientformerv2-s0_4xb4-72e_coco.py) on the bundled
# demo shapes
# (4 classes, 256x256): the backbone unchanged, encoder, decoder, data and recipe of
# configs/rtdetr/rtdetr_r18vd_demo-256.py
# (128 channels, no pretrained weights, so the backbone trains at the full learning rate).
#   python tools/train.py configs/rtdetr_vit/rtdetr_efficientformerv2-s0_demo-256.py
_base_ = '../rtdetr/rtdetr_r18vd_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='EfficientFormerV2', arch='s0', out_indices=(1, 2, 3)),
    neck=dict(in_channels=(48, 96, 176)))
