# RT-DETR with ViT-S/16 + simple feature pyramid (configs/rtdetr_vit/rtdetr_vit-s_sfp_4xb4-72e_coco.py) on the bundled
# demo
# shapes (4 classes, 256x256): the ViT built for 256 px (a 16x16 position embedding, resized per batch for the
# demo's multi-scale 192-320), encoder, decoder, data and recipe of configs/rtdetr/rtdetr_r18vd_demo-256.py (128
# channels,
# no pretrained weights, so the backbone trains at the full learning rate).
#   python tools/train.py configs/rtdetr_vit/rtdetr_vit-s_sfp_demo-256.py
_base_ = '../rtdetr/rtdetr_r18vd_demo-256.py'

model = dict(
    backbone=dict(_delete_=True, type='ViTWithMixer', arch='small', img_size=256, patch_size=16, with_cls_token=False,
                  out_type='featmap', drop_path_rate=0.1, mixer=dict(type='SoftmaxAttention')),
    # 128 channels: the demo's embed_dims
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=384, out_channels=128, scale_factors=(2.0, 1.0, 0.5)),
        dict(type='HybridEncoder', arch='r18', in_channels=(128, 128, 128), hidden_dim=128, dim_feedforward=256),
    ])
