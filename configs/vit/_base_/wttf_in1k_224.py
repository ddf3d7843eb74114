# Which Transformer to Favor (arXiv 2308.09372): the shared ImageNet-1k fine-tuning recipe at 224 px,
# DeiT-III style (arXiv 2204.07118): 3-Augment, LAMB, cosine schedule with warm-up, label smoothing,
# Mixup/CutMix. A variant config bases on a size (`wttf_{tiny,small,base}_in1k_224.py`) and overrides the part it
# changes.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

img_size = 224
model = dict(
    type='AuxLossImageClassifier',
    backbone=dict(type='ViTWithMixer', arch='tiny', img_size=img_size, patch_size=16, drop_path_rate=0.05),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
              dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# data: ImageNet-1k under data/imagenet (mmpretrain layout: train/, val/, meta/)
data_preprocessor = dict(
    num_classes=1000, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # 3-Augment: one of grayscale, solarization, Gaussian blur, then colour jitter
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomGrayscale', prob=1.0, keep_channels=True)],
        [dict(type='Solarize', thr=128, prob=1.0)],
        [dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=1.0)],
    ]),
    dict(type='ColorJitter', brightness=0.3, contrast=0.3, saturation=0.3),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(img_size / 0.875), edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

# schedule: 50 epochs, LAMB lr 3e-3 at batch 2048 (auto-scaled), 5 warm-up epochs, cosine decay
optim_wrapper = dict(
    optimizer=dict(type='Lamb', lr=3e-3, weight_decay=0.02),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={
        '.cls_token': dict(decay_mult=0.0),
        '.pos_embed': dict(decay_mult=0.0)
    }),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=5, end=50),
]
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=2048)
