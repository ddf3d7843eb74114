# The short name users type (python tools/train.py configs/rtdetr_r18.py) for rtdetr/rtdetr_r18vd_4xb4-72e_coco.py.
_base_ = ['./rtdetr/rtdetr_r18vd_4xb4-72e_coco.py']
