"""A stock mmdet detector around a given backbone: checks that a backbone serves MMDetection as it is."""
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmeff.registry import DET_MODELS


def build_retinanet(backbone: dict, in_channels: list):
    """mmdet's own RetinaNet config with ``backbone`` (strides 8, 16, 32) feeding its FPN."""
    cfg = Config.fromstring("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'", '.py')
    cfg.model.backbone = backbone
    cfg.model.neck.update(in_channels=in_channels, start_level=0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DET_MODELS.build(cfg.model)
