# DynamicViT, keep rate 0.9 per stage before blocks 4, 7, 10 (ratio loss weight 2 averaged over
# the 3 stages), ViT-Base/16 on ImageNet-1k at 224 px (token removal).
_base_ = '../_base_/wttf_base_in1k_224.py'
model = dict(backbone=dict(reducers=[
    dict(type='DynamicViTPredictor', keep_ratio=ratio, loss_weight=2 / 3, layer=i)
    for i, ratio in ((3, 0.900), (6, 0.810), (9, 0.729))
]))
