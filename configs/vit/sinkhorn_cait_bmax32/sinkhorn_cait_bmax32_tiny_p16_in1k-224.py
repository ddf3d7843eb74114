# Sparse Sinkhorn attention (blocks of at most 32 tokens) in the CaiT skeleton with the ViT-Tiny size
# (12 blocks + 2 class-attention layers), on ImageNet-1k at 224 px (sparse attention).
_base_ = '../_base_/wttf_in1k_224.py'
model = dict(
    backbone=dict(_delete_=True, type='CaiT', arch='tiny', init_values=1e-4, drop_path_rate=0.05,
                  mixer=dict(type='SinkhornAttention', max_block_size=32)),
    head=dict(in_channels=192))
