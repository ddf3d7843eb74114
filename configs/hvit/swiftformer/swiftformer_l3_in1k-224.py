# SwiftFormer-L3 on ImageNet-1k at 224 px (non-attention token shuffling: efficient additive attention).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='SwiftFormer', arch='l3'), head=dict(in_channels=512))
