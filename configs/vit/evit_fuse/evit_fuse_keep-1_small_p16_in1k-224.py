# EViT-S-Fuse/16 as *Which Transformer to Favor* measured it: its authors' `evit_small_patch16_fuse` keeps EViT's
# default keep rate 1, so no token is removed or fused and the model computes as ViT-S. EViT-fuse's token fusion:
# evit_fuse_small_p16_in1k-224.py.
_base_ = './evit_fuse_small_p16_in1k-224.py'
model = dict(backbone=dict(
    reducers=[dict(type='EViTReorganize', keep_rate=1.0, fuse_token=True, layer=i) for i in (3, 6, 9)]))
