# RT-DETR-R50 (https://arxiv.org/abs/2304.08069) on COCO with the paper's recipe: the base of every
# RT-DETR config (configs/rtdetr/*_coco.py change the sizes only).
_base_ = ['mmdet::_base_/default_runtime.py', './coco_detection.py', './schedule_72e.py']
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

model = dict(
    type='RTDETR',
    num_queries=300,
    feat_channels=(256, 256, 256),
    # pixel values / 255 only, RGB
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[0, 0, 0], std=[255, 255, 255], bgr_to_rgb=True, pad_size_divisor=32,
        batch_augments=[dict(type='BatchSyncChoiceResize', stop_epoch={{_base_.stop_aug_epoch}})]),
    # The paper starts from ImageNet-pretrained backbones: set backbone.init_cfg=dict(type='Pretrained',
    # checkpoint=...) or load_from the converted official weights.
    backbone=dict(type='PResNet', depth=50, out_indices=(1, 2, 3)),
    neck=dict(type='HybridEncoder', arch='r50'),
    decoder=dict(
        type='RTDETRTransformerDecoder', num_layers=6, embed_dims=256,
        layer_cfg=dict(num_heads=8, feedforward_channels=1024, dropout=0.0, num_levels=3, num_points=4)),
    bbox_head=dict(
        type='RTDETRHead', num_classes=80, embed_dims=256, query_select='vfl',
        loss_cls=dict(type='RTDETRVarifocalLoss', alpha=0.75, gamma=2.0, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100)),
    train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
        dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0),
        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
        dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
    test_cfg=dict(max_per_img=300, eval_idx=-1))

default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3))
custom_hooks = [
    # mmdet's ExpMomentumEMA with momentum 1 - 0.9999 and gamma 2000 averages with decay
    # 0.9999 * (1 - exp(-n / 2000)) at the n-th update: the official ModelEMA (buffers included).
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4, gamma=2000, update_buffers=True, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch={{_base_.stop_aug_epoch}},
         switch_pipeline={{_base_.train_pipeline_stage2}}),
    # class names of the dataset vs. model.bbox_head.num_classes
    dict(type='NumClassCheckHook'),
]
