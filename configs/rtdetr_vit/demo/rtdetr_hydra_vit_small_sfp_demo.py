# RT-DETR with Hydra-attention ViT-S/16 + simple feature pyramid (configs/rtdetr_vit/rtdetr_hydra_vit_small_sfp.py)
# on the bundled demo shapes: rtdetr_vit_small_sfp_demo.py with Hydra attention.
#   python tools/train.py configs/rtdetr_vit/demo/rtdetr_hydra_vit_small_sfp_demo.py
_base_ = './rtdetr_vit_small_sfp_demo.py'

model = dict(backbone=dict(mixer=dict(_delete_=True, type='HydraAttention')))
