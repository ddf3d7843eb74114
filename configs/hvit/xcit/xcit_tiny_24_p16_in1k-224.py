# XCiT-Tiny-24/16 on ImageNet-1k at 224 px: MMPretrain's XCiT, made lean (LeanXCiT; low-rank class).
# Isotropic, classified by its class-attention layers: the head reads the normalized cls token (no pooling neck).
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(
        type='LeanXCiT',
        img_size=224,
        patch_size=16,
        embed_dims=192,
        depth=24,
        num_heads=4,
        layer_scale_init_value=1e-5,
        tokens_norm=True,
        out_type='cls_token',
        drop_path_rate=0.05),
    neck=None,
    head=dict(in_channels=192))
