from .checks import DataConfigError, check_coco_annotations, check_data_config
from .demo import DemoClassificationDataset, DemoCocoDataset, ensure_demo_classification, ensure_demo_coco
from .transforms import RTDETR_TRAIN_SIZES, BatchSyncChoiceResize

__all__ = [
    'BatchSyncChoiceResize', 'DataConfigError', 'check_coco_annotations', 'check_data_config',
    'DemoClassificationDataset', 'DemoCocoDataset', 'ensure_demo_classification', 'ensure_demo_coco',
    'RTDETR_TRAIN_SIZES'
]
