# RT-DETR's recipe (https://arxiv.org/abs/2304.08069, Sec. 5.1, and the official configs): AdamW,
# lr 1e-4, backbone 1e-5, weight decay 1e-4 except on norms and biases, gradient clipping at 0.1,
# linear warm-up over 2000 iterations (RT-DETRv2's LinearWarmup), then a constant lr, 72 epochs,
# EMA 0.9999 with a 2000-update warm-up.
max_epochs = 72
# RT-DETRv2 stops the heavy augmentation and the multi-scale resize from epoch 71 (0-based): the
# last epoch trains at 640 only.
stop_aug_epoch = 71

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    # mmengine's default would keep decay on what custom_keys match (the backbone's trainable norms)
    constructor='NoDecayNormBiasConstructor',
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0, bias_decay_mult=0))

# mmengine's LinearLR over [0, 2000) multiplies the lr by (t + 1) / 2000 at iteration t: the
# official LinearWarmup(warmup_duration=2000). No decay afterwards (the official MultiStepLR
# milestone lies beyond the 72 epochs).
param_scheduler = [dict(type='LinearLR', start_factor=1 / 2000, by_epoch=False, begin=0, end=2000)]

# The total batch size the learning rates are for (`tools/train.py --auto-scale-lr` rescales).
auto_scale_lr = dict(enable=False, base_batch_size=16)
