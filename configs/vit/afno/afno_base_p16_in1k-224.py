# AFNO, 8 blocks, ViT-Base/16 on ImageNet-1k at 224 px (fourier).
_base_ = '../_base_/wttf_base_in1k_224.py'
model = dict(backbone=dict(with_cls_token=False, out_type='avg', mixer=dict(type='AdaptiveFourierMixing',
                                                                            num_blocks=8)))
