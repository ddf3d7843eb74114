# Which Transformer to Favor (arXiv 2308.09372): the shared ImageNet-1k recipe of the isotropic ViTs
# (../../vit/_base_/wttf_in1k_224.py) for the hierarchical and hybrid models. A variant config sets
# the backbone and the head's in_channels; the neck pools the last feature map.
_base_ = ['../../vit/_base_/wttf_in1k_224.py']

model = dict(backbone=dict(_delete_=True), neck=dict(_delete_=True, type='GlobalAveragePooling'))
