# Next-ViT-Large on ImageNet-1k at 224 px (hybrid attention: NCB conv blocks + NTB transformer blocks).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='NextViT', arch='large', drop_path_rate=0.2), head=dict(in_channels=1024))
