# ViT baseline (DeiT III, LayerScale), ViT-Base/16 on ImageNet-1k at 224 px (baseline).
_base_ = '../_base_/wttf_base_in1k_224.py'
