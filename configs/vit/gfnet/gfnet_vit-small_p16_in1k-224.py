# GFNet with ViT's sizes (ViT-Small/16), not GFNet's own (those are gfnet_{ti,xs,s,b}_p16_in1k-224.py):
# the ViT skeleton's block (LayerScale 1e-4) with a global filter as token mixer, no class token,
# ImageNet-1k at 224 px (fourier).
_base_ = '../_base_/wttf_small_in1k_224.py'
model = dict(backbone=dict(with_cls_token=False, out_type='avg', mixer=dict(type='GlobalFilter')))
