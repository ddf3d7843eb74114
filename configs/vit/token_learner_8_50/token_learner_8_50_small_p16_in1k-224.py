# TokenLearner, 8 tokens from 50 % depth, ViT-Small/16 on ImageNet-1k at 224 px (summary tokens).
_base_ = '../_base_/wttf_small_in1k_224.py'
model = dict(backbone=dict(reducers=[dict(type='TokenLearner', learned_tokens=8, layer=6)]))
