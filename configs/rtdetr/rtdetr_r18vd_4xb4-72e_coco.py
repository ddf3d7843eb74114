# RT-DETR-R18: 20M params, 46.5 AP; 3 decoder layers, backbone norms trained (not frozen).
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
model = dict(backbone=dict(depth=18), neck=dict(arch='r18'), decoder=dict(num_layers=3))
