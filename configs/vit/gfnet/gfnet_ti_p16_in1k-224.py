# GFNet-Ti/16 in GFNet's own size scheme (256 dim, 12 blocks, MLP ratio 4), as *Which Transformer
# to Favor* measured it (its authors' `gfnet_tiny_patch16`); otherwise as GFNet-S (gfnet_s_p16_in1k-224.py).
_base_ = './gfnet_s_p16_in1k-224.py'
model = dict(backbone=dict(arch=dict(embed_dim=256, depth=12)), head=dict(in_channels=256))
