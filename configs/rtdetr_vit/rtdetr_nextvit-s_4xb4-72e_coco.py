# RT-DETR with a second hybrid (convolution + attention) backbone: Next-ViT-S (Li et al.,
# https://arxiv.org/abs/2207.05501; convolutional-attention blocks with a transformer block closing each stage,
# designed for deployment latency). Its stages 2-4 (out_indices 1-3: 256/512/1024 channels at strides 8/16/32)
# replace PResNet-50's S3-S5 in front of the R50-size hybrid encoder and 6-layer decoder (Next-ViT-S's 31M
# parameters are close to ResNet-50's 24M). Inputs must be multiples of 32, as all of RT-DETR's sizes are.
_base_ = '../rtdetr/rtdetr_r50vd_4xb4-72e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='NextViT', arch='small', out_indices=(1, 2, 3), drop_path_rate=0.2,
        # ImageNet weights (configs/hvit/nextvit): init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    neck=dict(in_channels=(256, 512, 1024)))
# Learning rates: rtdetr_r50vd_4xb4-72e_coco.py's, i.e. the paper's AdamW 1e-4 with the pretrained backbone at 1e-5
# (lr_mult 0.1,
# the ratio the paper uses for every ImageNet-pretrained backbone up to R50).
