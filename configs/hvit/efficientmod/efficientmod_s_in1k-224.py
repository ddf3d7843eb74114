# EfficientMod-S on ImageNet-1k at 224 px (non-attention token shuffling: efficient modulation, attention
# blocks closing stages 3-4; stochastic depth of the authors' models).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='EfficientMod', arch='s', drop_path_rate=0.02), head=dict(in_channels=312))
