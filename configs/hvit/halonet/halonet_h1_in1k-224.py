# HaloNet-H1 (block 8, halo 3) on ImageNet-1k at 224 px (sparse attention: blocked local attention
# with a halo). Maps are padded to whole blocks with the padding masked out, so 224 works.
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='HaloNet', arch='h1'), head=dict(in_channels=512))
