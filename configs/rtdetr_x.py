# The short name users type (python tools/train.py configs/rtdetr_x.py) for rtdetr/rtdetr_hgnetv2-x_4xb4-72e_coco.py.
_base_ = ['./rtdetr/rtdetr_hgnetv2-x_4xb4-72e_coco.py']
