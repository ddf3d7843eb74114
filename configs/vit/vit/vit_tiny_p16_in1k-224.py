# ViT baseline (DeiT III, LayerScale), ViT-Tiny/16 on ImageNet-1k at 224 px (baseline).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
