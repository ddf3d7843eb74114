# The short name users type (python tools/train.py configs/rtdetr_r50m.py) for rtdetr/rtdetr_r50vd-m_4xb4-72e_coco.py.
_base_ = ['./rtdetr/rtdetr_r50vd-m_4xb4-72e_coco.py']
