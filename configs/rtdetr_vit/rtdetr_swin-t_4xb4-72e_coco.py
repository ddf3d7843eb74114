# RT-DETR with a windowed-attention backbone: MMPretrain's Swin-T (Liu et al., https://arxiv.org/abs/2103.14030;
# attention in shifted 7x7 windows, a 4-stage pyramid). Its stages 2-4 (out_indices 1-3: 192/384/768 channels
# at strides 8/16/32) replace PResNet-50's S3-S5 in front of the R50-size hybrid encoder and 6-layer decoder
# (Swin-T's 28M backbone parameters are close to ResNet-50's 24M). COCO under data/coco, the paper's recipe.
_base_ = '../rtdetr/rtdetr_r50vd_4xb4-72e_coco.py'
custom_imports = dict(imports=['mmeff', 'mmpretrain.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='LeanSwinTransformer', arch='tiny', img_size=640, out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        # pad maps smaller than a 7x7 window (as Swin's detection code) instead of failing on small inputs
        pad_small_map=True,
        # ImageNet weights (configs/hvit/swin): init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    neck=dict(in_channels=(192, 384, 768)))

# RT-DETR's learning rates (AdamW 1e-4, backbone 1e-5): the paper fine-tunes every ImageNet-pretrained backbone at
# 1/10 of the detector's rate (R18-R50; only R101 lower), so a pretrained Swin-T keeps lr_mult 0.1. As in Swin's own
# recipe, the relative position bias tables get no weight decay (norms and biases have none in RT-DETR's recipe).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone': dict(lr_mult=0.1),
    'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0)}))
