# The ViT-Small size class of Which Transformer to Favor on the shared recipe.
_base_ = ['./wttf_in1k_224.py']
model = dict(backbone=dict(arch='small'), head=dict(in_channels=384))
