# Mixing: RT-DETR with another library's backbone, MMPretrain's ResNet-50 (scope prefix `mmpretrain.`),
# instead of PResNet; everything else (encoder, decoder, data, recipe) is configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py.
_base_ = '../rtdetr/rtdetr_r50vd_4xb4-72e_coco.py'
custom_imports = dict(imports=['mmeff', 'mmpretrain.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='mmpretrain.ResNet', depth=50, out_indices=(1, 2, 3), frozen_stages=0, norm_eval=True,
        # ImageNet weights: init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    # S3-S5 of a ResNet-50 have 512, 1024, 2048 channels, as PResNet-50's
    neck=dict(arch='r50'))
