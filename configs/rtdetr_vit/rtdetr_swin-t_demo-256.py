# RT-DETR with Swin-T (configs/rtdetr_vit/rtdetr_swin-t_4xb4-72e_coco.py) on the bundled demo shapes (4 classes,
# 256x256):
# the backbone unchanged, encoder, decoder, data and recipe of configs/rtdetr/rtdetr_r18vd_demo-256.py (128 channels,
# no pretrained weights, so the backbone trains at the full learning rate).
#   python tools/train.py configs/rtdetr_vit/rtdetr_swin-t_demo-256.py
_base_ = '../rtdetr/rtdetr_r18vd_demo-256.py'
custom_imports = dict(imports=['mmeff', 'mmpretrain.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='LeanSwinTransformer', arch='tiny', img_size=256, out_indices=(1, 2, 3),
                  pad_small_map=True, drop_path_rate=0.1),
    neck=dict(in_channels=(192, 384, 768)))
