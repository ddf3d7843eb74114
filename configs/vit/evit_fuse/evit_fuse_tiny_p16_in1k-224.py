# EViT-fuse, keep rate 0.7 at blocks 4, 7, 10, inattentive tokens fused, ViT-Tiny/16 on ImageNet-1k at 224 px (token
# merging).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
model = dict(backbone=dict(
    reducers=[dict(type='EViTReorganize', keep_rate=0.7, fuse_token=True, layer=i) for i in (3, 6, 9)]))
