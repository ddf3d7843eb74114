# mmdet's RetinaNet-R50-FPN model (unchanged but for 4 classes) on the bundled demo shapes (4 classes, 256x256),
# trained from scratch on a CPU: AdamW with a short warm-up and cosine decay, batch 8, 12 epochs. The configs beside
# it swap the backbone (and neck) as the COCO configs one folder up do.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', '../../_base_/datasets/demo_coco.py',
          'mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['mmeff', 'mmpretrain.models'], allow_failed_imports=False)

model = dict(bbox_head=dict(num_classes=4))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0), paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=60),
    dict(type='CosineAnnealingLR', eta_min=1e-5, begin=0, end=max_epochs, T_max=max_epochs, by_epoch=True,
         convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
custom_hooks = [dict(type='NumClassCheckHook')]
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=8)
