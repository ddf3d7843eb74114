from . import vit_with_mixer
from . import hgnetv2
from . import presnet
from . import cait
from . import cvt
from . import wavevit
from . import rest
from . import halonet
