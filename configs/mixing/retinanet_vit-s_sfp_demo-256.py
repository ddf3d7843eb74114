# retinanet_vit-s_sfp_1x_coco.py on the bundled demo shapes (_base_/retinanet_demo-256.py), from scratch, with the ViT
# built for the demo's 256x256 inputs:
#   python tools/train.py configs/mixing/retinanet_vit-s_sfp_demo-256.py
_base_ = './_base_/retinanet_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='ViTWithMixer', arch='small', img_size=256, patch_size=16, with_cls_token=False,
                  out_type='featmap', drop_path_rate=0.1, mixer=dict(type='SoftmaxAttention')),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=384, out_channels=256,
              scale_factors=(2.0, 1.0, 0.5), num_extra_levels=2))
