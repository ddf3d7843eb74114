# RT-DETR with Next-ViT-S (configs/rtdetr_vit/rtdetr_nextvit-s_4xb4-72e_coco.py) on the bundled demo shapes (4 classes,
# 256x256): the backbone unchanged, encoder, decoder, data and recipe of configs/rtdetr/rtdetr_r18vd_demo-256.py (128
# channels, no pretrained weights, so the backbone trains at the full learning rate).
#   python tools/train.py configs/rtdetr_vit/rtdetr_nextvit-s_demo-256.py
_base_ = '../rtdetr/rtdetr_r18vd_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='NextViT', arch='small', out_indices=(1, 2, 3), drop_path_rate=0.1),
    neck=dict(in_channels=(256, 512, 1024)))
