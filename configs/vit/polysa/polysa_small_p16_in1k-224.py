# Poly-SA (Poly-NL third-order polynomial attention), ViT-Small/16 on ImageNet-1k at 224 px (kernel attention).
_base_ = '../_base_/wttf_small_in1k_224.py'
model = dict(backbone=dict(mixer=dict(type='PolySelfAttention')))
