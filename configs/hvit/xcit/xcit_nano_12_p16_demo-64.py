# XCiT-N12/16 on the bundled demo classification set (4 classes, 64 px): a minutes-long CPU run.
_base_ = ['../../_base_/datasets/demo_classification.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

model = dict(
    type='AuxLossImageClassifier',
    backbone=dict(type='LeanXCiT', img_size=64, patch_size=16, embed_dims=128, depth=12, num_heads=4,
                  tokens_norm=False),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=4,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

optim_wrapper = dict(optimizer=dict(type='Lamb', lr=2e-3, weight_decay=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=10),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=10))
