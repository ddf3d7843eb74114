# FocalNet-B (small receptive field: 2 focal levels) on ImageNet-1k at 224 px (non-attention shuffling).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='FocalNet', arch='base', focal_level=2, drop_path_rate=0.5),
             head=dict(in_channels=1024))
