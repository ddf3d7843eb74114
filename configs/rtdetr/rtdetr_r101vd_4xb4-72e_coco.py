# RT-DETR-R101: 76M params, 54.3 AP; 384-channel encoder, backbone lr 1e-6.
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
model = dict(backbone=dict(depth=101), neck=dict(arch='r101'), feat_channels=(384, 384, 384))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}))
