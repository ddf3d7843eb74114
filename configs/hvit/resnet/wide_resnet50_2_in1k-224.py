# Wide ResNet-50-2 (Zagoruyko & Komodakis, https://arxiv.org/abs/1605.07146) on ImageNet-1k at 224 px: MMPretrain's
# ResNet with twice the bottleneck width (the convolutional baseline), with the shared transformer recipe.
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(type='ResNet', depth=50, base_channels=128, expansion=2, out_indices=(3, )),
    head=dict(in_channels=2048))
