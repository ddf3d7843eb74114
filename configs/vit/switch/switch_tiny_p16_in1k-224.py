# Switch Transformer, 8 experts, ViT-Tiny/16 on ImageNet-1k at 224 px (mlp block).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
model = dict(backbone=dict(mlp=dict(type='SwitchMlp', num_experts=8)))
