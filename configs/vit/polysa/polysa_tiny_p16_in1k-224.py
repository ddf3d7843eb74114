# Poly-SA (Poly-NL third-order polynomial attention), ViT-Tiny/16 on ImageNet-1k at 224 px (kernel attention).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
model = dict(backbone=dict(mixer=dict(type='PolySelfAttention')))
