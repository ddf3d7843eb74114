# RT-DETR with Hydra-attention ViT-S/16 + simple feature pyramid
# (configs/rtdetr_vit/rtdetr_hydra-vit-s_sfp_4xb4-72e_coco.py)
# on the bundled demo shapes: rtdetr_vit-s_sfp_demo-256.py with Hydra attention.
#   python tools/train.py configs/rtdetr_vit/rtdetr_hydra-vit-s_sfp_demo-256.py
_base_ = './rtdetr_vit-s_sfp_demo-256.py'

model = dict(backbone=dict(mixer=dict(_delete_=True, type='HydraAttention')))
