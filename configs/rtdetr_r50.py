# The short name users type (python tools/train.py configs/rtdetr_r50.py) for rtdetr/rtdetr_r50vd_4xb4-72e_coco.py.
_base_ = ['./rtdetr/rtdetr_r50vd_4xb4-72e_coco.py']
