from . import vit_with_mixer
from . import hgnetv2
from . import presnet
from . import cait
from . import nextvit
from . import focalnet
from . import efficientvit_mit
from . import coat
