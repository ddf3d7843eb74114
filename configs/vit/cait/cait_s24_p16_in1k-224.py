# CaiT-S24: talking-heads self-attention over the patches, then 2 class-attention layers,
# LayerScale 1e-5 (CaiT's own size names), on ImageNet-1k at 224 px (summary tokens).
_base_ = '../_base_/wttf_in1k_224.py'
model = dict(backbone=dict(_delete_=True, type='CaiT', arch='s24', drop_path_rate=0.05), head=dict(in_channels=384))
