# RT-DETR with ViT-S/16 whose attention is Hydra attention (Bolya et al., https://arxiv.org/abs/2209.07484):
# its cost grows linearly with the number of tokens (O(N C) instead of softmax's O(N^2 C)), which matters at
# detection sizes: 1600 patches at 640 px, 2500 at 800. Everything else as rtdetr_vit_small_sfp.py (simple feature
# pyramid, 640-px position embedding resized per batch for the multi-scale training, learning rates).
_base_ = './rtdetr_vit-s_sfp_4xb4-72e_coco.py'

model = dict(backbone=dict(mixer=dict(_delete_=True, type='HydraAttention')))
