from .checkpoint import SafeCheckpointHook, UnsafeCheckpointError, checkpoint_loading, newest_intact_checkpoint
from .optimizers import NoDecayNormBiasConstructor
from .randomness import RandomStateHook, SampleSeededSampler
from .runner import MMEffRunner

__all__ = [
    'MMEffRunner', 'NoDecayNormBiasConstructor', 'RandomStateHook', 'SafeCheckpointHook', 'SampleSeededSampler',
    'UnsafeCheckpointError', 'checkpoint_loading', 'newest_intact_checkpoint'
]
