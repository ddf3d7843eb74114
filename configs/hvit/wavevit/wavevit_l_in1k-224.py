# Wave-ViT-L on ImageNet-1k at 224 px (sparse attention: Haar-wavelet down-sampled keys/values).
# The classifier reads a class token refined by one class-attention block, as in the paper.
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(
    backbone=dict(type='WaveViT', arch='l', out_type='cls_token', drop_path_rate=0.4),
    neck=None,
    head=dict(in_channels=512))
