# EfficientViT-L2 (MIT, multi-scale linear attention) on ImageNet-1k at 224 px (hybrid attention).
# The authors' head: 1x1 conv + pooling + a hidden linear layer with LayerNorm before the classifier.
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(
    backbone=dict(type='EfficientViTMIT', arch='l2'),
    neck=None,
    head=dict(type='EfficientViTClsHead', in_channels=512, widths=(3072, 3200), norm_eps=1e-7,
              act_cfg=dict(type='GELU', approximate='tanh')))
