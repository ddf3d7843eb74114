# GFNet-S/16 in GFNet's own size scheme (384 dim, 19 blocks, MLP ratio 4), as *Which Transformer to Favor*
# measured it (its authors' `gfnet_small_patch16`): no class token, no LayerScale, mean of the normed tokens,
# ImageNet-1k at 224 px (fourier): GFNet's block, one residual around filter and MLP.
_base_ = '../_base_/wttf_in1k_224.py'
model = dict(
    backbone=dict(
        # num_heads: unused, a global filter has no heads
        arch=dict(_delete_=True, embed_dim=384, depth=19, num_heads=1, mlp_ratio=4.0),
        init_values=None,
        single_residual=True,
        with_cls_token=False,
        out_type='avg',
        mixer=dict(type='GlobalFilter')),
    head=dict(in_channels=384))
