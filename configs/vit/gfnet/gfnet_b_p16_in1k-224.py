# GFNet-B/16 in GFNet's own size scheme (512 dim, 19 blocks, MLP ratio 4), as *Which Transformer
# to Favor* measured it (its authors' `gfnet_base_patch16`); otherwise as GFNet-S (gfnet_s_p16_in1k-224.py).
_base_ = './gfnet_s_p16_in1k-224.py'
model = dict(backbone=dict(arch=dict(embed_dim=512, depth=19)), head=dict(in_channels=512))
