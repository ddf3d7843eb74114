# GFNet-XS/16 in GFNet's own size scheme (386 dim, 12 blocks, MLP ratio 4), as *Which Transformer
# to Favor* measured it (its authors' `gfnet_extra_small_patch16`); otherwise as GFNet-S (gfnet_s_p16_in1k-224.py).
# 386 dim, not the GFNet paper's 384: the width of the authors' model the paper measured (16.14 M).
_base_ = './gfnet_s_p16_in1k-224.py'
model = dict(backbone=dict(arch=dict(embed_dim=386, depth=12)), head=dict(in_channels=386))
