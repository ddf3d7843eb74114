# EfficientFormerV2-L on ImageNet-1k at 224 px (hybrid attention; stochastic depth of the authors' recipe).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='EfficientFormerV2', arch='l', drop_path_rate=0.1), head=dict(in_channels=384))
