from . import ms_deform_attn, prepbn, pyramid, reparam, repvgg, rtdetr_decoder, switch_mlp, token_reducers, vit_blocks
