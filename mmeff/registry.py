"""Where mmeff's modules are registered.

mmeff has no model registry of its own: every module goes into the registries of the library
whose configs use it, so that ``type='HybridEncoder'`` resolves in an ``mmdet`` config and
``type='ViTWithMixer'`` in an ``mmpretrain`` one. A backbone serves both and is registered in both.
"""
from mmdet.registry import DATASETS as DET_DATASETS
from mmdet.registry import HOOKS as DET_HOOKS
from mmdet.registry import MODELS as DET_MODELS
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_OPTIM_WRAPPER_CONSTRUCTORS
from mmdet.registry import OPTIM_WRAPPERS as DET_OPTIM_WRAPPERS
from mmdet.registry import TASK_UTILS as DET_TASK_UTILS
from mmdet.registry import TRANSFORMS as DET_TRANSFORMS
from mmengine.registry import LOOPS, RUNNERS
from mmpretrain.registry import DATASETS as CLS_DATASETS
from mmpretrain.registry import MODELS as CLS_MODELS
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS as CLS_OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.registry import OPTIM_WRAPPERS as CLS_OPTIM_WRAPPERS

__all__ = [
    'DET_DATASETS', 'DET_HOOKS', 'DET_MODELS', 'DET_OPTIM_WRAPPER_CONSTRUCTORS', 'DET_OPTIM_WRAPPERS',
    'DET_TASK_UTILS', 'DET_TRANSFORMS', 'CLS_DATASETS', 'CLS_MODELS', 'CLS_OPTIM_WRAPPER_CONSTRUCTORS',
    'CLS_OPTIM_WRAPPERS', 'LOOPS', 'RUNNERS',
    'register_backbone'
]


def register_backbone(cls):
    """Register a backbone in MMDetection's and MMPretrain's model registries."""
    DET_MODELS.register_module(module=cls)
    CLS_MODELS.register_module(module=cls)
    return cls
