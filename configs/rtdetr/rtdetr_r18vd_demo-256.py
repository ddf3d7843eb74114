# RT-DETR-R18 shrunk to train from scratch on the bundled demo shapes (4 classes, 256x256) on a CPU
# in a few minutes: the paper's detector, pipeline and recipe, with smaller widths and inputs.
#   python tools/train.py configs/rtdetr/rtdetr_r18vd_demo-256.py
# Changes to configs/rtdetr/rtdetr_r18vd_4xb4-72e_coco.py: the backbone is ResNet-18-vd at half width (mmdet's
# ResNetV1d:
# PResNet has no width argument, and the full-width one trains ~4x slower on a CPU), 256x256 input
# (multi-scale 192-320), 128-channel encoder and decoder, 100 queries and 50 denoising queries, no
# pretrained backbone (so it gets the full learning rate), a higher learning rate with a short
# warm-up, batch 8, fewer epochs.
_base_ = ['./rtdetr_r18vd_4xb4-72e_coco.py']

img_scale = (256, 256)
max_epochs = 8
stop_aug_epoch = max_epochs - 3
embed_dims = 128

model = dict(
    num_queries=100,
    feat_channels=(embed_dims, ) * 3,
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchSyncChoiceResize', sizes=(192, 224, 256, 256, 256, 288, 320), stop_epoch=stop_aug_epoch)
    ]),
    backbone=dict(_delete_=True, type='ResNetV1d', depth=18, base_channels=32, stem_channels=32,
                  out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False),
    neck=dict(in_channels=(64, 128, 256), hidden_dim=embed_dims, dim_feedforward=2 * embed_dims),
    decoder=dict(embed_dims=embed_dims, layer_cfg=dict(feedforward_channels=4 * embed_dims)),
    bbox_head=dict(num_classes=4, embed_dims=embed_dims),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=50)),
    test_cfg=dict(max_per_img=100))

# The paper's augmentations at the demo's scale: zoom-out up to 2x (4x would leave shapes of a few pixels).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=9),
    dict(type='Expand', mean=(0, 0, 0), ratio_range=(1, 2), prob=0.5),
    dict(type='RandomApply', transforms=dict(type='MinIoURandomCrop'), prob=0.8),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
train_pipeline_stage2 = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    # 'instances': CocoMetric builds the ground truth from them (the demo set has no ann_file in the config)
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'instances')),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(_delete_=True, type='DemoCocoDataset', split='train', filter_cfg=dict(filter_empty_gt=False),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(_delete_=True, type='DemoCocoDataset', split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric', metric='bbox', format_only=False)
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=4e-4), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=60),
    dict(type='CosineAnnealingLR', eta_min=2e-5, begin=0, end=max_epochs, T_max=max_epochs, by_epoch=True,
         convert_to_iter_based=True),
]
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4, gamma=2000, update_buffers=True, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch=stop_aug_epoch, switch_pipeline=train_pipeline_stage2),
    dict(type='NumClassCheckHook'),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(base_batch_size=8)
