# A stock MMPretrain classifier (ResNet-18, from scratch) on the bundled demo shapes: the smoke test
# of the classification plumbing with mmpretrain's own components.
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/datasets/demo_classification.py']
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=4, in_channels=512,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))

max_epochs = 5
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(base_batch_size=16)
