# COCO 2017 under data/coco/ with RT-DETR's training augmentations (https://arxiv.org/abs/2304.08069,
# Sec. 5.1): photometric distortion, zoom-out, IoU crop (p 0.8), horizontal flip, resize to 640x640
# without keeping the aspect ratio, then batch-level multi-scale (BatchSyncChoiceResize in the
# model's data_preprocessor). mmdet's transforms match the official torchvision ones:
# - PhotoMetricDistortion: each op with p 0.5 as RandomPhotometricDistort(p=0.5); contrast and
#   saturation 0.5-1.5, hue +-0.05 turn (9 of OpenCV's 180), brightness additive +-32 (official:
#   multiplicative 0.875-1.125, i.e. +-32 at mid-grey);
# - Expand = RandomZoomOut(fill=0): canvas side 1-4x, p 0.5;
# - MinIoURandomCrop = RandomIoUCrop: min IoU drawn from {0.1..0.9, any, no crop}, crop side >= 0.3,
#   aspect 0.5-2; it has no probability argument, so mmcv's RandomApply gives the official p 0.8;
# - FilterAnnotations(min 1 px, keep_empty=False) = SanitizeBoundingBoxes(min_size=1): images
#   left without boxes stay in the batch.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
backend_args = None
img_scale = (640, 640)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=9),
    dict(type='Expand', mean=(0, 0, 0), ratio_range=(1, 4), prob=0.5),
    dict(type='RandomApply', transforms=dict(type='MinIoURandomCrop'), prob=0.8),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
# The last epoch(s), as RT-DETRv2: no photometric distortion, zoom-out or IoU crop (PipelineSwitchHook).
train_pipeline_stage2 = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
# Inference resizes exactly as training (no letterbox); predictions are scaled back to the original image.
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

# Total batch 16 as the paper: 4 GPUs x 4 images (auto_scale_lr.base_batch_size = 16).
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # the official code trains on every image, also those without boxes
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json', metric='bbox',
    format_only=False, backend_args=backend_args)
test_evaluator = val_evaluator
