# A-ViT: adaptive token halting before every block after the first (ponder loss 5e-4),
# ViT-Base/16 on ImageNet-1k at 224 px (token removal).
_base_ = '../_base_/wttf_base_in1k_224.py'
model = dict(backbone=dict(reducers=[dict(type='AViTHalting', layer=i) for i in range(1, 12)]))
