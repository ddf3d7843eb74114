# RT-DETR-L: HGNetv2-L backbone, 32M params, 53.0 AP; backbone lr 5e-6 (the official RT-DETRv2 config).
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
model = dict(backbone=dict(_delete_=True, type='HGNetv2', arch='L', out_indices=(1, 2, 3)), neck=dict(arch='l'))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.05)}))
