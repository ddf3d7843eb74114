# retinanet_swin-t_fpn_1x_coco.py on the bundled demo shapes (_base_/retinanet_demo-256.py), from scratch:
#   python tools/train.py configs/mixing/retinanet_swin-t_fpn_demo-256.py
_base_ = './_base_/retinanet_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='LeanSwinTransformer', arch='tiny', out_indices=(1, 2, 3),
                  pad_small_map=True, drop_path_rate=0.1),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))
