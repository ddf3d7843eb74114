# CoaT-Tiny (serial + parallel co-scale blocks) on ImageNet-1k at 224 px (hybrid attention: conv-attention).
# The classifier reads the class tokens (out_type='cls_token'), as the paper's model does.
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(
    backbone=dict(type='CoaT', arch='tiny', out_type='cls_token', drop_path_rate=0.1),
    neck=None,
    head=dict(in_channels=152))
optim_wrapper = dict(constructor='SharedModuleConstructor')  # its position encodings are shared modules
