from . import vit_with_mixer
from . import hgnetv2
from . import presnet
from . import cait
from . import efficientformer_v2
from . import fastvit
from . import swiftformer
from . import efficientmod
