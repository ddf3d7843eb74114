# MLP-Mixer-S/16 on ImageNet-1k at 224 px: MMPretrain's MlpMixer (non-attention token shuffling), as LeanMlpMixer.
# The token-mixing MLPs are sized for (14 x 14) patches, so the model takes 224 px only.
_base_ = '../_base_/wttf_hier_in1k_224.py'

model = dict(
    backbone=dict(type='LeanMlpMixer', arch='s', img_size=224, patch_size=16, drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling', dim=1),  # mean over the tokens of (B, C, N)
    head=dict(in_channels=512))
