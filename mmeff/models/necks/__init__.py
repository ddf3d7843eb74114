from . import aifi
from . import ccff
from . import hybrid_encoder
