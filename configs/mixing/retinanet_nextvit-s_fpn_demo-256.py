# retinanet_nextvit-s_fpn_1x_coco.py on the bundled demo shapes (_base_/retinanet_demo-256.py), from scratch:
#   python tools/train.py configs/mixing/retinanet_nextvit-s_fpn_demo-256.py
_base_ = './_base_/retinanet_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='NextViT', arch='small', out_indices=(1, 2, 3), drop_path_rate=0.1),
    neck=dict(in_channels=[256, 512, 1024], start_level=0, num_outs=5))
