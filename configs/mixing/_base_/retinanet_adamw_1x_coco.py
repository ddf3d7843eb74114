# mmdet's RetinaNet-R50-FPN 1x on COCO (data/coco), unchanged but for the optimizer: AdamW lr 1e-4, weight decay
# 0.05 with none on norms, biases and position tables, mmdet's recipe for transformer backbones
# (swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py; ViTDet also trains with AdamW) instead of the ResNet's SGD.
# The configs beside it swap the backbone (and neck).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff', 'mmpretrain.models'], allow_failed_imports=False)

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={
        'backbone.pos_embed': dict(decay_mult=0.0),
        'relative_position_bias_table': dict(decay_mult=0.0)}))
