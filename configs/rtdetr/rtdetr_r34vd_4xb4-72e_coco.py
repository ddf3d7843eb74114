# RT-DETR-R34: 31M params, 48.9 AP; 4 decoder layers.
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
model = dict(backbone=dict(depth=34), neck=dict(arch='r34'), decoder=dict(num_layers=4))
