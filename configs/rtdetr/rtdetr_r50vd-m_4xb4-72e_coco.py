# RT-DETR-R50-m: 36M params, 51.3 AP; encoder expansion 0.5, inference stops after decoder layer 3 of 6.
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
model = dict(neck=dict(arch='r50m'), test_cfg=dict(eval_idx=2))
