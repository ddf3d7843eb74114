# Reformer LSH attention, buckets of 64, 4 hash rounds, ViT-Small/16 on ImageNet-1k at 224 px (sparse attention).
_base_ = '../_base_/wttf_small_in1k_224.py'
model = dict(backbone=dict(mixer=dict(type='LSHAttention', bucket_size=64, num_hashes=4)))
