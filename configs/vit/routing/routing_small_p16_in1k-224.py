# Routing Transformer attention (online k-means, sqrt(N) = 14 clusters), ViT-Small/16 on ImageNet-1k
# at 224 px (sparse attention).
_base_ = '../_base_/wttf_small_in1k_224.py'
model = dict(backbone=dict(mixer=dict(type='RoutingAttention')))
