# The efficient-ViT backbones in a stock MMDetection detector (_base_/retinanet_adamw_1x_coco.py: mmdet's
# RetinaNet-R50-FPN 1x on COCO with AdamW). Here a plain ViT-S/16 (global softmax attention) and ViTDet's simple
# feature pyramid replace ResNet-50 + FPN: the stride-16 map becomes strides 8/16/32 (deconvolution / identity /
# max pooling, 1x1 + 3x3 convs with LayerNorm), plus strides 64/128 by stride-2 subsampling for RetinaNet's 5
# anchor levels.
# Input size: mmdet resizes to at most 1333x800 keeping the ratio and pads to a multiple of 32; the ViT is built for
# 800x1344 and bicubically resizes its position embedding to each batch's patch grid (a 224-px checkpoint's 14x14
# embedding is resized when loaded).
_base_ = './_base_/retinanet_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='ViTWithMixer', arch='small', img_size=(800, 1344), patch_size=16, with_cls_token=False,
        out_type='featmap', drop_path_rate=0.1, mixer=dict(type='SoftmaxAttention'),
        # ImageNet weights: init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=384, out_channels=256,
              scale_factors=(2.0, 1.0, 0.5), num_extra_levels=2))

