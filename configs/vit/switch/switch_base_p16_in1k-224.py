# Switch Transformer, 8 experts, ViT-Base/16 on ImageNet-1k at 224 px (mlp block).
_base_ = '../_base_/wttf_base_in1k_224.py'
model = dict(backbone=dict(mlp=dict(type='SwitchMlp', num_experts=8)))
