# TokenLearner, 8 tokens from 50 % depth, ViT-Base/16 on ImageNet-1k at 224 px (summary tokens).
_base_ = '../_base_/wttf_base_in1k_224.py'
model = dict(backbone=dict(reducers=[dict(type='TokenLearner', learned_tokens=8, layer=6)]))
