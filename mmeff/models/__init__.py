from . import layers
from . import mixers
from . import backbones
from . import necks
from . import classifiers
from . import losses
from . import heads
from . import detectors
