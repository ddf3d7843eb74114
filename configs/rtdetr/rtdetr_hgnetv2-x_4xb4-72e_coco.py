# RT-DETR-X: HGNetv2-X backbone, 67M params, 54.8 AP; 384-channel encoder, backbone lr 1e-6
# (the official RT-DETRv2 config).
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
model = dict(backbone=dict(_delete_=True, type='HGNetv2', arch='X', out_indices=(1, 2, 3)), neck=dict(arch='x'),
             feat_channels=(384, 384, 384))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}))
