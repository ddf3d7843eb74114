from .checkpoint import SafeCheckpointHook, UnsafeCheckpointError, checkpoint_loading, newest_intact_checkpoint
from .runner import MMEffRunner
from .optimizers import NoDecayNormBiasConstructor
from .randomness import RandomStateHook, SampleSeededSampler

__all__ = [
    'MMEffRunner', 'NoDecayNormBiasConstructor', 'RandomStateHook', 'SafeCheckpointHook', 'SampleSeededSampler',
    'UnsafeCheckpointError', 'checkpoint_loading', 'newest_intact_checkpoint'
]
