# SLAB (simplified linear attention + progressive re-parameterized BatchNorm), ViT-Tiny/16 without
# class token on ImageNet-1k at 224 px (kernel attention).
_base_ = '../_base_/wttf_tiny_in1k_224.py'
# PRepBN: LayerNorm fades linearly into RepBN over the first 16 % of training, the authors' ratio for
# DeiT (T = 60k of 300 epochs x 1,251 steps); here of 50 epochs x 626 steps at batch 2048. Eval runs
# RepBN only, so recompute total_steps (training forwards per process) for another batch or schedule.
model = dict(
    backbone=dict(
        with_cls_token=False,
        out_type='avg',
        mixer=dict(type='SimplifiedLinearAttention'),
        norm_cfg=dict(type='PRepBN', total_steps=5000)))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.eta': dict(decay_mult=0.0)}))  # RepBN's scalar
