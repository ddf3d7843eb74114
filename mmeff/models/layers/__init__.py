from . import vit_blocks
from . import ms_deform_attn
from . import rtdetr_decoder
from . import reparam
from . import repvgg
from . import switch_mlp
from . import token_reducers
from . import pyramid
