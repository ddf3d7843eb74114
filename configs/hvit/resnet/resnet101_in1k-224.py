# ResNet-101 on ImageNet-1k at 224 px: MMPretrain's ResNet (the convolutional baseline), with the
# shared transformer recipe of the paper.
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(backbone=dict(type='ResNet', depth=101, out_indices=(3, )), head=dict(in_channels=2048))
