# Mixing: RT-DETR's efficient hybrid encoder (AIFI on S5 + CCFF) as the neck of a stock mmdet RetinaNet,
# in place of its FPN. The encoder gives S3-S5 (strides 8-32), so the head's anchors use these 3 levels.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

model = dict(
    backbone=dict(out_indices=(1, 2, 3)),
    neck=dict(_delete_=True, type='HybridEncoder', arch='r50'),
    bbox_head=dict(anchor_generator=dict(strides=[8, 16, 32])))
