# RT-DETR with a hybrid (convolution + attention) backbone: EfficientFormerV2-S0 (Li et al.,
# https://arxiv.org/abs/2212.08059; convolutional stages, attention in the last two). Its stages 2-4
# (out_indices 1-3: 48/96/176 channels at strides 8/16/32) replace PResNet-18's S3-S5 in front of the R18-size
# hybrid encoder and 3-layer decoder (a 3.5M-parameter backbone goes with the lightest RT-DETR).
_base_ = '../rtdetr/rtdetr_r18vd_4xb4-72e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='EfficientFormerV2', arch='s0', out_indices=(1, 2, 3),
        # ImageNet weights (configs/hvit/efficientformerv2): init_cfg=dict(type='Pretrained', checkpoint=...,
        # prefix='backbone.')
    ),
    neck=dict(in_channels=(48, 96, 176)))
# Learning rates: rtdetr_r18vd_4xb4-72e_coco.py's, i.e. the paper's AdamW 1e-4 with the pretrained backbone at 1e-5
# (lr_mult 0.1,
# the ratio the paper uses for every ImageNet-pretrained backbone up to R50).
