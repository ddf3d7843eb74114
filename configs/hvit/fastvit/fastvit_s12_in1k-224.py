# FastViT-S12 on ImageNet-1k at 224 px (non-attention token shuffling: re-parameterizable RepMixer;
# stochastic depth of the authors' recipe). The backbone ends with the classification MobileOne conv
# (2x width), which the classifier pools.
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='FastViT', arch='s12', drop_path_rate=0.0), head=dict(in_channels=1024))
