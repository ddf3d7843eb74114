"""CaiT: going deeper with image transformers (Touvron et al., https://arxiv.org/abs/2103.17239).

Two stages: a class-token-free ViT with LayerScale and talking-heads self-attention over the
patches, then a few class-attention layers where only the class token is updated, attending to
itself and the (frozen) patch tokens. The class token thereby summarizes the patches at the end
instead of travelling through every block. The patch stage reuses ``ViTWithMixer``, so its token
mixer is swappable (e.g. Sinkhorn attention, as *Which Transformer to Favor* does).
"""
from types import MappingProxyType
from typing import Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from mmeff.registry import register_backbone

from ..layers.vit_blocks import Mlp, TokenState, ViTBlock
from .vit_with_mixer import VIT_ARCHS, ViTWithMixer, resolve_arch

# CaiT's own sizes (the paper's Table 1) and the ViT size classes with 2 class-attention layers
# (as *Which Transformer to Favor* builds Sinkhorn-CaiT), read-only.
CAIT_ARCHS = MappingProxyType({
    'xxs24': MappingProxyType(dict(embed_dim=192, depth=24, num_heads=4, mlp_ratio=4.0, class_depth=2)),
    'xs24': MappingProxyType(dict(embed_dim=288, depth=24, num_heads=6, mlp_ratio=4.0, class_depth=2)),
    's24': MappingProxyType(dict(embed_dim=384, depth=24, num_heads=8, mlp_ratio=4.0, class_depth=2)),
    **{name: MappingProxyType(dict(size, class_depth=2)) for name, size in VIT_ARCHS.items()},
})


class ClassAttention(nn.Module):
    """Attention of the class token (the first token) to all tokens; returns [B, 1, C]."""

    def __init__(self, embed_dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.k = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.v = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, t.shape[1], self.num_heads, -1).transpose(1, 2)  # B, heads, n, d

        cls = F.scaled_dot_product_attention(heads(self.q(x[:, :1])), heads(self.k(x)), heads(self.v(x)))
        return self.proj(cls.transpose(1, 2).reshape(B, 1, C))


class ClassAttentionBlock(ViTBlock):
    """A ViT block whose attention updates only the class token: ``x_cls += ls1(CA(norm1([x_cls, x])))``."""

    def forward(self, patches: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        cls = cls + self.drop_path(self.ls1(self.mixer(self.norm1(torch.cat([cls, patches], dim=1)))))
        return cls + self.drop_path(self.ls2(self.mlp(self.norm2(cls))))


@register_backbone
class CaiT(ViTWithMixer):
    """CaiT backbone: a class-token-free ViT stage, then ``class_depth`` class-attention layers.

    Args:
        arch: ``'xxs24'``, ``'xs24'``, ``'s24'``, a ViT size (``'tiny'``, ``'small'``, ``'base'``)
            or a dict with ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``class_depth``.
        init_values: LayerScale init (1e-5 for the 24-layer models in the paper).
        mixer: token mixer of the patch stage (talking-heads attention in CaiT).
        Other arguments as ``ViTWithMixer``.
    """

    def __init__(self,
                 arch: Union[str, Mapping] = 'xxs24',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 qkv_bias: bool = True,
                 init_values: Optional[float] = 1e-5,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6,
                 mixer: Mapping = MappingProxyType(dict(type='TalkingHeadsAttention')),
                 mlp: Mapping = MappingProxyType(dict(type='Mlp')),
                 init_cfg: Optional[dict] = None):
        size = resolve_arch(arch, CAIT_ARCHS)
        class_depth = size.pop('class_depth')
        # the patch stage is a ViT without class token; its readout is replaced below.
        super().__init__(size, img_size, patch_size, in_channels, qkv_bias, init_values, drop_rate,
                         drop_path_rate, norm_eps, with_cls_token=False, out_type='avg', mixer=mixer,
                         mlp=mlp, init_cfg=init_cfg)
        embed_dim = size['embed_dim']
        self.class_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.class_blocks = nn.ModuleList(
            ClassAttentionBlock(
                embed_dim,
                mixer=ClassAttention(embed_dim, size['num_heads'], qkv_bias),
                mlp=Mlp(embed_dim, size['mlp_ratio'], drop_rate),
                init_values=init_values,
                norm_eps=norm_eps) for _ in range(class_depth))

    def init_weights(self):
        super().init_weights()
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            trunc_normal_(self.class_token, std=0.02)  # not over the loaded one

    def readout(self, tokens: torch.Tensor, state: TokenState) -> Tuple[torch.Tensor]:
        """Patch tokens [B, N, C] -> the class token after the class-attention layers [B, C]."""
        cls = self.class_token.expand(tokens.shape[0], -1, -1)
        for block in self.class_blocks:
            cls = block(tokens, cls)
        return (self.norm(torch.cat([cls, tokens], dim=1))[:, 0], )
