from . import aifi
from . import ccff
from . import hybrid_encoder
from . import simple_feature_pyramid
