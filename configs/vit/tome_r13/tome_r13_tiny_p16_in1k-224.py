# ToMe, r = 13 merges per block, ViT-Tiny/16 on ImageNet-1k at 224 px (token merging).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
model = dict(backbone=dict(reducers=[dict(type='ToMeMerge', r=13, layer=i) for i in range(12)]))
