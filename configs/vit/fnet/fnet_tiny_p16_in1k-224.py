# FNet, ViT-Tiny/16 on ImageNet-1k at 224 px (fourier).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
model = dict(backbone=dict(mixer=dict(type='FourierMixing')))
