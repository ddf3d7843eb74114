# SLAB-Ti/16 on the bundled demo classification set (4 classes, 64 px): a minutes-long CPU run.
_base_ = ['../../_base_/datasets/demo_classification.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

max_epochs = 10
# LayerNorm fades into RepBN over the first 16 % of the training steps (the authors' ratio); the
# counter is per training forward, so this depends on the dataset and batch size (here 20 steps/epoch).
model = dict(
    type='AuxLossImageClassifier',
    backbone=dict(
        type='ViTWithMixer',
        arch='tiny',
        img_size=64,
        patch_size=16,
        with_cls_token=False,
        out_type='avg',
        mixer=dict(type='SimplifiedLinearAttention'),
        norm_cfg=dict(type='PRepBN', total_steps=32)),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=4,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

optim_wrapper = dict(
    optimizer=dict(type='Lamb', lr=2e-3, weight_decay=0.02),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={'.eta': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=10))
