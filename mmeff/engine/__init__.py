from .amp import CPUAmpOptimWrapper, amp_optim_wrapper
from .checkpoint import SafeCheckpointHook, UnsafeCheckpointError, checkpoint_loading, newest_intact_checkpoint
from .loops import PrecisionTestLoop, float32_predictions, test_at_precision
from .optimizers import NoDecayNormBiasConstructor, SharedModuleConstructor
from .randomness import RandomStateHook, SampleSeededSampler
from .runner import MMEffRunner

__all__ = [
    'CPUAmpOptimWrapper', 'MMEffRunner', 'NoDecayNormBiasConstructor', 'PrecisionTestLoop', 'RandomStateHook',
    'SafeCheckpointHook', 'SampleSeededSampler', 'SharedModuleConstructor', 'UnsafeCheckpointError',
    'amp_optim_wrapper', 'checkpoint_loading', 'float32_predictions', 'newest_intact_checkpoint', 'test_at_precision'
]
