# RT-DETR with a plain (isotropic) ViT-S/16 backbone through ViTDet's simple feature pyramid
# (Li et al., https://arxiv.org/abs/2203.16527): global softmax attention over all patches, one stride-16 map
# (out_type='featmap'), from which SimpleFeaturePyramid builds strides 8/16/32 (deconvolution / identity /
# max pooling, then 1x1 and 3x3 convs with LayerNorm) for the R50-size hybrid encoder and 6-layer decoder.
# The class token is dropped, as in ViTDet (loading a classification checkpoint ignores it).
#
# Input size: the ViT is built for 640x640 (a 40x40 position embedding). Training keeps RT-DETR's batch-level
# multi-scale (480-800 px, multiples of 32 and so of the patch size 16): ViTWithMixer bicubically resizes the
# learned 40x40 position embedding to each batch's patch grid (30x30-50x50), as ViTDet interpolates its
# pre-trained embedding; a 224-px ImageNet checkpoint's 14x14 embedding is resized to 40x40 when loaded.
_base_ = '../rtdetr/rtdetr_r50vd_4xb4-72e_coco.py'

vit_embed_dim = 384
model = dict(
    backbone=dict(
        _delete_=True, type='ViTWithMixer', arch='small', img_size=640, patch_size=16, with_cls_token=False,
        out_type='featmap', drop_path_rate=0.1, mixer=dict(type='SoftmaxAttention'),
        # ImageNet weights (configs/vit/vit/vit_small_p16_in1k-224.py):
        # init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    ),
    # a list of necks runs in sequence: ViT map -> 3-level pyramid -> RT-DETR's hybrid encoder
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=vit_embed_dim, out_channels=256, scale_factors=(2.0, 1.0, 0.5)),
        dict(type='HybridEncoder', arch='r50', in_channels=(256, 256, 256)),
    ])

# RT-DETR's learning rates (AdamW 1e-4, backbone 1e-5): the paper fine-tunes every ImageNet-pretrained backbone at
# 1/10 of the detector's rate (R18-R50; only R101 lower), so the pretrained ViT keeps lr_mult 0.1; the pyramid is new
# and trains at the full rate. As in the ViT's own recipe, the position embedding gets no weight decay.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'backbone': dict(lr_mult=0.1),
    'backbone.pos_embed': dict(lr_mult=0.1, decay_mult=0.0)}))
