# RT-DETR-R50: 42M params, 53.1 AP on COCO val2017 (https://arxiv.org/abs/2304.08069, Table 2).
_base_ = ['../_base_/rtdetr/rtdetr_r50.py']
