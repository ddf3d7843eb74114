# ResT-Small on ImageNet-1k at 224 px (hybrid attention: EMSA with conv-reduced keys/values, PA positions).
_base_ = '../_base_/wttf_hier_in1k_224.py'
model = dict(backbone=dict(type='ResT', arch='small', drop_path_rate=0.1), head=dict(in_channels=512))
