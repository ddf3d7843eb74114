from .checkpoint import UnsafeCheckpointError, checkpoint_loading
from .runner import MMEffRunner
from .optimizers import NoDecayNormBiasConstructor

__all__ = ['MMEffRunner', 'NoDecayNormBiasConstructor', 'UnsafeCheckpointError', 'checkpoint_loading']
