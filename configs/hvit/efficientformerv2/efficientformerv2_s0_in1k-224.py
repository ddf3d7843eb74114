# EfficientFormerV2-S0 on ImageNet-1k at 224 px (hybrid attention; stochastic depth of the authors' recipe).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='EfficientFormerV2', arch='s0', drop_path_rate=0.0), head=dict(in_channels=176))
