# Linformer, k = 256 (the authors' choice), ViT-Tiny/16 on ImageNet-1k at 224 px (low-rank attention).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
model = dict(backbone=dict(mixer=dict(type='LinformerAttention', proj_len=256)))
