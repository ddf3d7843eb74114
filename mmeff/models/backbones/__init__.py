from . import vit_with_mixer
from . import hgnetv2
from . import presnet
from . import cait
from . import swin_v2
from . import mmpretrain_twins
from . import hivit
from . import stvit_swin
